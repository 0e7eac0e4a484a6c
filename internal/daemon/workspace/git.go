package workspace

import (
	"banger/internal/system"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Git runs git. Every call of this package goes through it: argv only,
// names always after "--" or on stdin with -z, never a shell.
type Git interface {
	// Run runs git with args in dir, with env added to the process's
	// environment, stdin (may be nil) and stdout (nil: discarded). An
	// error names the argv and carries git's stderr.
	Run(ctx context.Context, dir string, env []string, stdin io.Reader, stdout io.Writer, args ...string) error
}

// ExecGit runs the git binary at Path ("git" from PATH when empty).
type ExecGit struct {
	Path string
	Env  []string // added to every call, e.g. HOME for a caller's identity
}

var _ Git = ExecGit{}

// Run implements Git. LC_ALL=C keeps git's messages stable; GIT_TERMINAL_PROMPT=0
// and GIT_OPTIONAL_LOCKS=0 keep a read-only call from asking or writing.
func (g ExecGit) Run(ctx context.Context, dir string, env []string, stdin io.Reader, stdout io.Writer, args ...string) error {
	bin := g.Path
	if bin == "" {
		bin = "git"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "GIT_TERMINAL_PROMPT=0", "GIT_OPTIONAL_LOCKS=0")
	cmd.Env = append(cmd.Env, g.Env...)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = stdin
	cmd.Stdout = stdout
	stderr := &system.HeadBuffer{Max: 64 << 10}
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, msg)
		}
		return fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// output runs git and returns its stdout.
func output(ctx context.Context, g Git, dir string, env []string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	err := g.Run(ctx, dir, env, nil, &out, args...)
	return out.Bytes(), err
}

// line runs git and returns its stdout without the trailing newline.
func line(ctx context.Context, g Git, dir string, env []string, args ...string) (string, error) {
	out, err := output(ctx, g, dir, env, args...)
	return strings.TrimRight(string(out), "\n"), err
}

// splitNUL splits git's -z output.
func splitNUL(b []byte) []string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// exitCode is the exit status carried by err, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
