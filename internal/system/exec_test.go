package system

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"banger/internal/errdefs"
	"github.com/google/go-cmp/cmp"
)

func TestExecRunnerRun(t *testing.T) {
	tests := []struct {
		name       string
		argv       []string
		wantOut    string
		wantErr    bool
		wantCode   int
		wantStderr string
		wantMsg    string
	}{
		{name: "true", argv: []string{"true"}},
		{name: "stdout", argv: []string{"echo", "hello world"}, wantOut: "hello world\n"},
		{name: "false", argv: []string{"false"}, wantErr: true, wantCode: 1, wantMsg: "false: exit status 1"},
		{
			name:       "stderr and exit code",
			argv:       []string{"sh", "-c", "echo out; echo err >&2; exit 3"},
			wantOut:    "out\n",
			wantErr:    true,
			wantCode:   3,
			wantStderr: "err\n",
			wantMsg:    `sh -c "echo out; echo err >&2; exit 3": exit status 3: err`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r ExecRunner
			out, err := r.Run(context.Background(), tt.argv...)
			if got := string(out); got != tt.wantOut {
				t.Errorf("stdout = %q, want %q", got, tt.wantOut)
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				return
			}
			var ce *CommandError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *CommandError", err, err)
			}
			if ce.ExitCode != tt.wantCode {
				t.Errorf("ExitCode = %d, want %d", ce.ExitCode, tt.wantCode)
			}
			if ce.Stderr != tt.wantStderr {
				t.Errorf("Stderr = %q, want %q", ce.Stderr, tt.wantStderr)
			}
			if diff := cmp.Diff(tt.argv, ce.Argv); diff != "" {
				t.Errorf("Argv mismatch (-want +got):\n%s", diff)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("Error() = %q, want %q", err.Error(), tt.wantMsg)
			}
		})
	}
}

func TestExecRunnerEnvironment(t *testing.T) {
	t.Setenv("LANG", "fr_FR.UTF-8")
	t.Setenv("LANGUAGE", "fr")
	t.Setenv("LC_ALL", "de_DE.UTF-8")
	t.Setenv("BANGER_TEST_PARENT", "kept")
	r := ExecRunner{ExtraEnv: []string{"BANGER_TEST_EXTRA=1", "BANGER_TEST_PARENT=overridden", "LC_ALL=fr_FR"}}
	out, err := r.Run(context.Background(), "env")
	if err != nil {
		t.Fatalf("Run(env): %v", err)
	}
	env := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		env[k] = append(env[k], v)
	}
	want := map[string][]string{
		"LC_ALL":             {"C"},
		"LANG":               nil,
		"LANGUAGE":           nil,
		"BANGER_TEST_EXTRA":  {"1"},
		"BANGER_TEST_PARENT": {"overridden"},
	}
	for k, v := range want {
		if diff := cmp.Diff(v, env[k]); diff != "" {
			t.Errorf("child env %s mismatch (-want +got):\n%s", k, diff)
		}
	}
}

func TestExecRunnerNotFound(t *testing.T) {
	for _, name := range []string{"banger-no-such-tool", "/nonexistent/banger-tool"} {
		t.Run(name, func(t *testing.T) {
			var r ExecRunner
			_, err := r.Run(context.Background(), name, "--flag")
			if !errors.Is(err, errdefs.ErrUnavailable) {
				t.Fatalf("error %v does not wrap ErrUnavailable", err)
			}
			var ce *CommandError
			if !errors.As(err, &ce) || ce.ExitCode != -1 {
				t.Fatalf("error %v: want a *CommandError with ExitCode -1", err)
			}
			if !strings.HasPrefix(err.Error(), name+" --flag: ") {
				t.Errorf("Error() = %q, want it to start with the argv", err.Error())
			}
		})
	}
	t.Run("message", func(t *testing.T) {
		var r ExecRunner
		_, err := r.Run(context.Background(), "banger-no-such-tool")
		if !errors.Is(err, exec.ErrNotFound) {
			t.Errorf("error %v does not wrap exec.ErrNotFound", err)
		}
		want := "banger-no-such-tool: executable file not found in $PATH: unavailable"
		if err.Error() != want {
			t.Errorf("Error() = %q, want %q", err.Error(), want)
		}
	})
}

func TestExecRunnerEmptyArgv(t *testing.T) {
	var r ExecRunner
	for _, argv := range [][]string{nil, {""}} {
		if _, err := r.Run(context.Background(), argv...); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Run(%q) error = %v, want ErrInvalidArgument", argv, err)
		}
	}
}

func TestExecRunnerContext(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		want error
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{
			name: "cancel",
			argv: []string{"sleep", "10"},
			want: context.Canceled,
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(100*time.Millisecond, cancel)
				return ctx, cancel
			},
		},
		{
			name: "deadline",
			argv: []string{"sleep", "10"},
			want: context.DeadlineExceeded,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 100*time.Millisecond)
			},
		},
		{
			// The background sleep keeps stdout open; only killing the
			// whole process group lets Run return before waitDelay.
			name: "children killed",
			argv: []string{"sh", "-c", "sleep 10 & wait"},
			want: context.Canceled,
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(100*time.Millisecond, cancel)
				return ctx, cancel
			},
		},
		{
			name: "already done",
			argv: []string{"true"},
			want: context.Canceled,
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			var r ExecRunner
			start := time.Now()
			_, err := r.Run(ctx, tt.argv...)
			if elapsed := time.Since(start); elapsed >= waitDelay {
				t.Errorf("Run returned after %v, want well under %v", elapsed, waitDelay)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestExecRunnerStdin(t *testing.T) {
	var r ExecRunner
	out, err := RunStdin(context.Background(), &r, strings.NewReader("line 1\nline 2\n"), "cat")
	if err != nil {
		t.Fatalf("RunStdin(cat): %v", err)
	}
	if got, want := string(out), "line 1\nline 2\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}

type plainRunner struct{}

func (plainRunner) Run(context.Context, ...string) ([]byte, error) { return nil, nil }

func TestRunStdinUnsupported(t *testing.T) {
	_, err := RunStdin(context.Background(), plainRunner{}, strings.NewReader("x"), "cat")
	if !errors.Is(err, ErrNoStdin) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("error = %v, want ErrNoStdin wrapping ErrUnavailable", err)
	}
}

func TestExecRunnerMapError(t *testing.T) {
	r := ExecRunner{MapError: func(ce *CommandError) error {
		return MatchStderr(ce, "No such table", errdefs.ErrNotFound)
	}}
	_, err := r.Run(context.Background(), "sh", "-c", "echo 'Error: No such table' >&2; exit 1")
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("error = %v, want it to wrap ErrNotFound", err)
	}
	_, err = r.Run(context.Background(), "false")
	var ce *CommandError
	if !errors.As(err, &ce) || errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unmapped error = %v, want a plain *CommandError", err)
	}
}
