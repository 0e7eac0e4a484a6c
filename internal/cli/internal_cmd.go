package cli

import (
	"bufio"
	"fmt"
	"os"

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
	return cmd
}
