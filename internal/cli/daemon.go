package cli

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"banger/internal/daemon"
)

func (a *app) daemonCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "daemon",
		Short: "Run the banger daemon in the foreground (as root)",
		Long: `Run the banger daemon in the foreground. It owns all of banger's host
state and serves the CLI on a unix socket. Stop it with SIGINT or SIGTERM:
in-flight requests get shutdown_timeout to finish, then the socket and pid
files are removed. Usually run by systemd (packaging/banger.service).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			opts := &slog.HandlerOptions{Level: cfg.SlogLevel()}
			var h slog.Handler = slog.NewTextHandler(a.stderr, opts)
			if cfg.LogFormat == "json" {
				h = slog.NewJSONHandler(a.stderr, opts)
			}
			logger := slog.New(h)
			if os.Geteuid() != 0 {
				return fmt.Errorf("the daemon must run as root (it manages loop devices, TAPs and VMMs): try `sudo banger daemon`")
			}
			d, err := daemon.Open(cmd.Context(), daemon.Options{Config: cfg, Logger: logger})
			if err != nil {
				return err
			}
			serveErr := d.Serve(cmd.Context())
			closeErr := d.Close()
			if serveErr != nil {
				return serveErr
			}
			if closeErr != nil {
				return closeErr
			}
			logger.Info("daemon stopped")
			return nil
		},
	}
}
