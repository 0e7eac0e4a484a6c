package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"banger/internal/rpc"
)

// shellArgv starts the user's login shell. vm.exec runs an argv, never a
// shell string, and the guest init sets SHELL to the user's shell from the
// image's /etc/passwd (or to /bin/sh when that one is missing), so /bin/sh
// execs "$SHELL -l": bash, zsh, dash and busybox sh all take -l. An image
// without /bin/sh has no shell to open: the guest init says so on stderr
// and the session ends with status 127.
var shellArgv = []string{"/bin/sh", "-c", `exec "${SHELL:-/bin/sh}" -l`}

func (a *app) shellCommand() *cobra.Command {
	var user, workdir string
	cmd := &cobra.Command{
		Use:   "shell NAME",
		Short: "Open an interactive shell in a running VM",
		Long: `Open the user's login shell in a running VM, through the daemon (no route
to the guest needed), on a terminal of the same size as yours. Your terminal
is in raw mode until the shell exits: Ctrl-C, Ctrl-Z and Ctrl-D go to the
guest. The exit status is the shell's. The image needs /bin/sh.

When stdin is not a terminal, no terminal is made: the shell reads its
commands from stdin (banger shell dev < script.sh), as ssh does.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.jsonOutput() {
				return errors.New("-o json: shell has no JSON output")
			}
			c, err := a.client(context.Background())
			if err != nil {
				return err
			}
			defer c.Close()
			return a.shellIn(c, rpc.VMExecParams{VM: args[0], User: user, Workdir: workdir}, args[0])
		},
	}
	cmd.Flags().StringVarP(&user, "user", "u", "", "user (name or uid[:gid]) in the guest")
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory in the guest (default: the user's home)")
	return cmd
}

// shellIn opens a shell in p.VM (called name in messages): on a terminal
// when stdin is one, else reading commands from stdin. A non-zero exit
// status comes back as an exitError.
func (a *app) shellIn(c *rpc.Client, p rpc.VMExecParams, name string) error {
	p.Argv = shellArgv
	var code int
	var err error
	if isTerminal(os.Stdin) {
		code, err = a.ttySession(c, os.Stdin, p, name)
	} else {
		code, err = a.execCall(context.Background(), c, p, true)
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// ttySession runs p on a terminal in the guest, with the local terminal in
// (a terminal) in raw mode as its keyboard and a.stdout as its screen, and
// returns its exit status. The terminal is restored on every way out: the
// command's end, an error, a panic here (deferred), and SIGTERM or SIGHUP,
// which end the session (the daemon then kills the command). SIGWINCH sends
// the new size; SIGINT from outside (not the keyboard: raw mode sends
// Ctrl-C as a byte) is forwarded as INT.
func (a *app) ttySession(c *rpc.Client, in *os.File, p rpc.VMExecParams, name string) (int, error) {
	sigs := make(chan os.Signal, 8)
	// SIGPIPE is caught so that a write to a closed stdout fails (and the
	// terminal is restored) instead of killing banger. Caught before the
	// size is read, so that no resize is missed.
	signal.Notify(sigs, unix.SIGWINCH, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGPIPE)
	defer signal.Stop(sigs)

	p.TTY = true
	if p.Term == "" {
		p.Term = os.Getenv("TERM")
	}
	p.Cols, p.Rows, _ = terminalSize(in)

	raw, err := makeRaw(in)
	if err != nil {
		return 0, fmt.Errorf("put the terminal in raw mode: %w", err)
	}
	defer raw.Restore()

	ctx, hangUp := context.WithCancel(context.Background())
	defer hangUp()
	call, err := c.Start(ctx, rpc.MethodVMExec, p, true)
	if err != nil {
		return 0, err
	}
	var endedBy atomic.Int32 // the signal that ended the session
	go func() {
		for {
			select {
			case s := <-sigs:
				switch s {
				case unix.SIGWINCH:
					if cols, rows, ok := terminalSize(in); ok {
						call.Send(rpc.InputResize, rpc.ExecResize{Cols: cols, Rows: rows})
					}
				case unix.SIGINT:
					call.Send(rpc.InputSignal, "INT")
				case unix.SIGTERM, unix.SIGHUP:
					endedBy.Store(int32(s.(syscall.Signal)))
					hangUp()
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		// Blocks in read until the next key after the session; that key
		// is lost.
		buf := make([]byte, 32<<10)
		for {
			n, err := in.Read(buf)
			if n > 0 && call.Send(rpc.InputStdin, buf[:n]) != nil {
				return
			}
			if err != nil {
				call.Send(rpc.InputEOF, nil)
				return
			}
		}
	}()

	// With a terminal the command's stderr is the terminal too: stderr
	// events come only from the guest init, saying why the command did
	// not start. They are shown once the terminal is restored.
	var initErr bytes.Buffer
	var res rpc.VMExecResult
	err = call.Wait(ctx, execOutput(a.stdout, &initErr), &res)
	raw.Restore()
	if sig := syscall.Signal(endedBy.Load()); sig != 0 {
		fmt.Fprintf(a.stderr, "\nbanger: %v: the session in vm %s was ended\n", sig, name)
		return 128 + int(sig), nil
	}
	if err != nil {
		return 0, err
	}
	if msg := strings.TrimSpace(initErr.String()); msg != "" {
		hint := ""
		if res.ExitCode == 126 || res.ExitCode == 127 {
			hint = fmt.Sprintf(" (a shell needs /bin/sh in the image; run a program directly with `banger exec %s -- PROGRAM`)", name)
		}
		fmt.Fprintf(a.stderr, "banger: vm %s: the shell did not start: %s%s\n", name, msg, hint)
	}
	return res.ExitCode, nil
}
