package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/daemon"
)

// internalCommand holds helpers the daemon runs, not users.
func (a *app) internalCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "internal", Hidden: true, Short: "Helpers the daemon runs"}
	cmd.AddCommand(&cobra.Command{
		Use:   "read PATH",
		Short: "Write a file, or a tar of a directory, to stdout (run by the daemon as the caller)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := bufio.NewWriterSize(os.Stdout, 256<<10)
			// The exit status tells the daemon which error it was
			// (see daemon.ServeCallerRead); stderr says it in words,
			// without the CLI's "banger: " prefix.
			code := daemon.ServeCallerRead(args[0], w, a.stderr)
			if err := w.Flush(); err != nil && code == 0 {
				fmt.Fprintln(a.stderr, err)
				code = 1
			}
			if code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	})
	a.workspaceHelpers(cmd)
	return cmd
}

// workspaceHelpers are the as-caller halves of workspace.prepare and
// workspace.export (see daemon.ServeWorkspacePack).
func (a *app) workspaceHelpers(cmd *cobra.Command) {
	cmd.AddCommand(&cobra.Command{
		Use:   "workspace-pack PATH",
		Short: "Pack a checkout for a guest (run by the daemon as the caller)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			meta := os.NewFile(3, "meta")
			if meta == nil {
				return errors.New("fd 3 (the manifest pipe) is not open")
			}
			code := daemon.ServeWorkspacePack(cmd.Context(), args[0], os.Stdin, os.Stdout, meta, a.stderr)
			meta.Close()
			if code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "workspace-export REQUEST",
		Short: "Apply a guest's work to a checkout (run by the daemon as the caller)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var bundle *os.File
			if strings.Contains(args[0], `"bundle":true`) {
				if bundle = os.NewFile(3, "bundle"); bundle == nil {
					return errors.New("fd 3 (the bundle) is not open")
				}
				defer bundle.Close()
			}
			code := daemon.ServeWorkspaceExport(cmd.Context(), args[0], os.Stdin, bundle, os.Stdout, a.stderr)
			if code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	})
}
