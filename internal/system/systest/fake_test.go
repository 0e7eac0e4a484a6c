package systest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"banger/internal/errdefs"
	"banger/internal/system"
	"github.com/google/go-cmp/cmp"
)

func TestFakeScript(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name    string
		script  func(f *Fake)
		argv    []string
		wantOut string
		wantErr error // matched with errors.Is; nil means success
	}{
		{
			name:    "exact",
			script:  func(f *Fake) { f.On([]string{"ip", "link", "show"}, Output("tap0\n")) },
			argv:    []string{"ip", "link", "show"},
			wantOut: "tap0\n",
		},
		{
			name:    "prefix",
			script:  func(f *Fake) { f.OnPrefix([]string{"ip", "link"}, Output("p")) },
			argv:    []string{"ip", "link", "del", "tap0"},
			wantOut: "p",
		},
		{
			name: "exact beats prefix registered later",
			script: func(f *Fake) {
				f.On([]string{"ip", "link", "show"}, Output("exact"))
				f.OnPrefix([]string{"ip", "link", "show"}, Output("prefix"))
			},
			argv:    []string{"ip", "link", "show"},
			wantOut: "exact",
		},
		{
			name: "longest prefix wins",
			script: func(f *Fake) {
				f.OnPrefix([]string{"ip", "link", "set"}, Output("long"))
				f.OnPrefix([]string{"ip"}, Output("short"))
			},
			argv:    []string{"ip", "link", "set", "tap0", "up"},
			wantOut: "long",
		},
		{
			name: "later rule replaces earlier",
			script: func(f *Fake) {
				f.On([]string{"true"}, Output("old"))
				f.On([]string{"true"}, Output("new"))
			},
			argv:    []string{"true"},
			wantOut: "new",
		},
		{
			name:    "no responses means empty success",
			script:  func(f *Fake) { f.On([]string{"true"}) },
			argv:    []string{"true"},
			wantOut: "",
		},
		{
			name:    "error response",
			script:  func(f *Fake) { f.On([]string{"x"}, Response{Err: errBoom}) },
			argv:    []string{"x"},
			wantErr: errBoom,
		},
		{
			name:    "default",
			script:  func(f *Fake) { f.Default(Response{Err: errdefs.ErrUnavailable}) },
			argv:    []string{"anything"},
			wantErr: errdefs.ErrUnavailable,
		},
		{
			name: "func",
			script: func(f *Fake) {
				f.OnPrefix([]string{"echo"}, Response{Func: func(_ context.Context, c Call) ([]byte, error) {
					return []byte(strings.Join(c.Argv[1:], " ")), nil
				}})
			},
			argv:    []string{"echo", "a", "b"},
			wantOut: "a b",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Fake
			tt.script(&f)
			out, err := f.Run(context.Background(), tt.argv...)
			if string(out) != tt.wantOut {
				t.Errorf("stdout = %q, want %q", out, tt.wantOut)
			}
			if tt.wantErr == nil && err != nil {
				t.Errorf("Run: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestFakeSequence(t *testing.T) {
	var f Fake
	f.On([]string{"pgrep", "firecracker"}, Output("1\n"), Exit(1, ""))
	var got []string
	for range 3 {
		out, err := f.Run(context.Background(), "pgrep", "firecracker")
		got = append(got, fmt.Sprintf("%q %v", out, err))
	}
	want := []string{
		`"1\n" <nil>`,
		`"" pgrep firecracker: exit status 1`,
		`"" pgrep firecracker: exit status 1`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("responses mismatch (-want +got):\n%s", diff)
	}
}

func TestFakeExitMapsToSentinel(t *testing.T) {
	var f Fake
	f.On([]string{"nft", "delete", "table", "inet", "banger"}, Exit(1, "Error: No such file or directory\n"))
	_, err := f.Run(context.Background(), "nft", "delete", "table", "inet", "banger")
	var ce *system.CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 1 {
		t.Fatalf("error = %v, want a *system.CommandError with exit code 1", err)
	}
	if err := system.MatchStderr(err, "No such file", errdefs.ErrNotFound); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("MatchStderr(%v) does not wrap ErrNotFound", err)
	}
}

func TestFakeUnmatched(t *testing.T) {
	var f Fake
	f.On([]string{"true"})
	_, err := f.Run(context.Background(), "mkfs.ext4", "-L", "my disk", "/dev/vdb")
	if err == nil || !strings.Contains(err.Error(), `mkfs.ext4 -L "my disk" /dev/vdb`) {
		t.Errorf("error = %v, want one naming the argv", err)
	}
	if got, want := f.Log(), "mkfs.ext4 -L \"my disk\" /dev/vdb\n"; got != want {
		t.Errorf("unmatched call not logged: Log() = %q, want %q", got, want)
	}
}

func TestFakeLogAndStdin(t *testing.T) {
	var f Fake
	f.Default(Response{})
	ctx := context.Background()
	f.Run(ctx, "ip", "link", "add", "tap0", "type", "tap")
	system.RunStdin(ctx, &f, strings.NewReader("table inet banger {}\n"), "nft", "-f", "-")
	f.Run(ctx, "sh", "-c", "echo hi")

	want := `ip link add tap0 type tap
nft -f -
sh -c "echo hi"
`
	if diff := cmp.Diff(want, f.Log()); diff != "" {
		t.Errorf("Log() mismatch (-want +got):\n%s", diff)
	}
	calls := f.Calls()
	if got := string(calls[1].Stdin); got != "table inet banger {}\n" {
		t.Errorf("recorded stdin = %q", got)
	}
	if calls[0].Stdin != nil {
		t.Errorf("Run recorded stdin %q, want nil", calls[0].Stdin)
	}
	f.Reset()
	if got := f.Log(); got != "" {
		t.Errorf("Log() after Reset = %q, want empty", got)
	}
}

func TestFakeContextAndEmptyArgv(t *testing.T) {
	var f Fake
	f.Default(Response{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Run(ctx, "true"); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with done ctx: error = %v, want context.Canceled", err)
	}
	if _, err := f.Run(context.Background()); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Run(): error = %v, want ErrInvalidArgument", err)
	}
	if got := f.Log(); got != "" {
		t.Errorf("calls that never ran were logged: %q", got)
	}
}

func TestFakeConcurrent(t *testing.T) {
	var f Fake
	f.OnPrefix([]string{"worker"}, Output("ok"), Output("again"))
	const workers, calls = 16, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range calls {
				if _, err := f.Run(context.Background(), "worker", fmt.Sprint(w), fmt.Sprint(i)); err != nil {
					t.Errorf("Run: %v", err)
				}
				_ = f.Log()
			}
		})
	}
	wg.Wait()
	if got := strings.Count(f.Log(), "\n"); got != workers*calls {
		t.Errorf("logged %d calls, want %d", got, workers*calls)
	}
}
