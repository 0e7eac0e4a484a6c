package system

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"banger/internal/errdefs"
)

// waitDelay bounds how long a cancelled command may keep its output pipes
// open (through a child that escaped the kill) before Run gives up on them.
const waitDelay = 2 * time.Second

// ExecRunner runs host commands with os/exec, without a shell. The child
// gets the parent's environment plus ExtraEnv, with LC_ALL=C forced and
// LANG/LANGUAGE removed. Each command runs in its own process group, and
// cancelling ctx kills the whole group. The zero value is ready to use.
type ExecRunner struct {
	// ExtraEnv holds KEY=value entries added after the parent's
	// environment; they override it, except for the locale variables.
	ExtraEnv []string
	// MapError, when set, sees every *CommandError and may return an
	// error wrapping a sentinel instead (nil keeps the original).
	MapError ErrorMapper
}

var (
	_ Runner      = (*ExecRunner)(nil)
	_ StdinRunner = (*ExecRunner)(nil)
)

// Run runs argv with no stdin (/dev/null) and returns its stdout. On
// failure it returns whatever stdout was written and a *CommandError
// (or MapError's replacement). An empty argv wraps
// errdefs.ErrInvalidArgument.
func (r *ExecRunner) Run(ctx context.Context, argv ...string) ([]byte, error) {
	return r.RunStdin(ctx, nil, argv...)
}

// RunStdin is Run with stdin as the command's standard input; a nil
// stdin reads from /dev/null.
func (r *ExecRunner) RunStdin(ctx context.Context, stdin io.Reader, argv ...string) ([]byte, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("run host command: empty argv: %w", errdefs.ErrInvalidArgument)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = commandEnv(os.Environ(), r.ExtraEnv)
	cmd.Stdin = stdin
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = waitDelay

	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	cerr := &CommandError{
		Argv:     slices.Clone(argv),
		ExitCode: -1,
		Stdout:   stdout.String(),
		Stderr:   stderr.String(),
		Err:      err,
	}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		cerr.Err = ctx.Err()
	case errors.As(err, &exitErr):
		cerr.ExitCode = exitErr.ExitCode()
	default:
		cerr.Err = startError(err)
	}
	if r.MapError != nil {
		if mapped := r.MapError(cerr); mapped != nil {
			return stdout.Bytes(), mapped
		}
	}
	return stdout.Bytes(), cerr
}

// killGroup SIGKILLs the process group led by pid.
func killGroup(pid int) error {
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// startError strips os/exec's wrapping (the argv is already in the
// CommandError) and marks a missing or non-executable binary unavailable.
func startError(err error) error {
	cause := err
	var execErr *exec.Error
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &execErr):
		cause = execErr.Err
	case errors.As(err, &pathErr):
		cause = pathErr.Err
	}
	if errors.Is(cause, exec.ErrNotFound) || errors.Is(cause, fs.ErrNotExist) || errors.Is(cause, fs.ErrPermission) {
		return fmt.Errorf("%w: %w", cause, errdefs.ErrUnavailable)
	}
	return err
}
