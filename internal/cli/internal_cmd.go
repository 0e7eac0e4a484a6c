package cli

import (
	"bufio"
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
			if err := daemon.ServeCallerRead(args[0], w); err != nil {
				return err
			}
			return w.Flush()
		},
	})
	return cmd
}
