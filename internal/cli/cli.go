// Package cli is banger's command line: cobra commands, output formats and
// progress display. It is the only importer of internal/daemon.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"banger/internal/config"
	"banger/internal/guestinit"
	"banger/internal/layout"
	"banger/internal/rpc"
)

// exitError carries an exit status without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Main runs the CLI with args and returns the process exit status.
func Main(args []string) int {
	if guestinit.IsGuestInit() {
		// The same binary is every guest's PID 1 (/.banger/init).
		return guestinit.Main(os.Args)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, os.Stdout, os.Stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := &app{stdout: stdout, stderr: stderr}
	root := app.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintf(stderr, "banger: %v\n", err)
	return 1
}

// app holds the global flags and the output streams.
type app struct {
	stdout, stderr io.Writer

	rootFlag   string
	socketFlag string
	configFlag string
	output     string
}

func (a *app) rootCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:           "banger",
		Short:         "Throwaway microVMs for developers and coding agents",
		Long:          "banger turns a Linux host into a factory of throwaway microVMs: boot any OCI image, copy a git checkout in, run a shell or a command, and bring the work back as a branch.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if a.output != "table" && a.output != "json" {
				return fmt.Errorf("-o/--output: %q is not one of table, json", a.output)
			}
			return nil
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&a.rootFlag, "root", "", "state root (default "+layout.DefaultRoot+"; env BANGER_ROOT)")
	pf.StringVar(&a.socketFlag, "socket", "", "daemon socket (default "+layout.DefaultSocket+"; env BANGER_SOCKET)")
	pf.StringVar(&a.configFlag, "config", "", "config file (default "+layout.DefaultConfigFile+"; env BANGER_CONFIG)")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	cmd.AddCommand(
		a.daemonCommand(),
		a.doctorCommand(),
		a.versionCommand(),
		a.lsCommand(),
		a.opCommand(),
		a.createCommand(),
		a.execCommand(),
		a.shellCommand(),
		a.runCommand(),
		a.rmCommand(),
		a.startCommand(),
		a.stopCommand(),
		a.restartCommand(),
		a.logsCommand(),
		a.setCommand(),
		a.proxyCommand(),
		a.sshConfigCommand(),
		a.vmShowCommand(),
		a.imageCommand(),
		a.kernelCommand(),
		a.workspaceCommand(),
		a.internalCommand(),
	)
	return cmd
}

// loadConfig resolves the configuration: defaults, then the config file,
// then BANGER_* environment variables, then flags.
func (a *app) loadConfig() (config.Config, error) {
	file, explicit := layout.DefaultConfigFile, false
	if v := os.Getenv("BANGER_CONFIG"); v != "" {
		file, explicit = v, true
	}
	if a.configFlag != "" {
		file, explicit = a.configFlag, true
	}
	cfg, err := config.Load(file, explicit)
	if err != nil {
		return cfg, err
	}
	if v := os.Getenv("BANGER_ROOT"); v != "" {
		cfg.Root = v
	}
	if v := os.Getenv("BANGER_SOCKET"); v != "" {
		cfg.Socket = v
	}
	if a.rootFlag != "" {
		cfg.Root = a.rootFlag
	}
	if a.socketFlag != "" {
		cfg.Socket = a.socketFlag
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("configuration (flags and environment included): %w", err)
	}
	return cfg, nil
}

// client dials the daemon named by the configuration.
func (a *app) client(ctx context.Context) (*rpc.Client, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	return rpc.Dial(ctx, cfg.Socket)
}
