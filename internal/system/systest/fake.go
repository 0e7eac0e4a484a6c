// Package systest provides Fake, a scripted system.Runner for tests. It
// records every command it is asked to run, so a test can compare the
// host changes it expected with Log() via cmp.Diff.
package systest

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"banger/internal/errdefs"
	"banger/internal/system"
)

// Response is what Fake returns for a matched command.
type Response struct {
	// Stdout is returned as the command's output, also on failure.
	Stdout string
	// ExitCode, when non-zero, fails the call with a *system.CommandError
	// holding Stdout and Stderr, as a real tool exiting non-zero would.
	ExitCode int
	Stderr   string
	// Err, when set, is returned as is; it takes precedence over ExitCode.
	Err error
	// Func, when set, computes the result and the fields above are
	// ignored. It runs without the fake's lock, so it may block on ctx.
	Func func(ctx context.Context, c Call) ([]byte, error)
}

// Output is a successful Response printing stdout.
func Output(stdout string) Response { return Response{Stdout: stdout} }

// Exit is a Response that exits with code and prints stderr.
func Exit(code int, stderr string) Response { return Response{ExitCode: code, Stderr: stderr} }

// Call is one command the fake was asked to run.
type Call struct {
	Argv  []string
	Stdin []byte // nil when run without stdin
}

// Fake is a system.Runner that answers from a script. Exact rules (On)
// win over prefix rules (OnPrefix), the longest prefix wins among those,
// and a later rule for the same argv replaces an earlier one. Calls no
// rule matches get the Default response, or else an error naming the argv.
// The zero value is ready to use; it is safe for concurrent use.
type Fake struct {
	mu    sync.Mutex
	rules []*rule   // guarded by mu
	def   *Response // guarded by mu
	calls []Call    // guarded by mu
}

var (
	_ system.Runner      = (*Fake)(nil)
	_ system.StdinRunner = (*Fake)(nil)
)

// rule answers calls with its responses in order; the last one repeats.
type rule struct {
	argv      []string
	prefix    bool
	responses []Response
	next      int // guarded by Fake.mu
}

// On scripts the responses for exactly argv. With no responses the
// command succeeds with empty output.
func (f *Fake) On(argv []string, rs ...Response) { f.add(argv, false, rs) }

// OnPrefix scripts the responses for every argv starting with prefix.
func (f *Fake) OnPrefix(prefix []string, rs ...Response) { f.add(prefix, true, rs) }

func (f *Fake) add(argv []string, prefix bool, rs []Response) {
	if len(rs) == 0 {
		rs = []Response{{}}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{argv: slices.Clone(argv), prefix: prefix, responses: slices.Clone(rs)})
}

// Default sets the response for calls no rule matches.
func (f *Fake) Default(r Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.def = &r
}

// Run records and answers argv.
func (f *Fake) Run(ctx context.Context, argv ...string) ([]byte, error) {
	return f.run(ctx, Call{Argv: slices.Clone(argv)})
}

// RunStdin reads stdin to the end, then records and answers argv.
func (f *Fake) RunStdin(ctx context.Context, stdin io.Reader, argv ...string) ([]byte, error) {
	c := Call{Argv: slices.Clone(argv)}
	if stdin != nil {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("systest: reading stdin of %s: %w", system.FormatArgv(argv), err)
		}
		c.Stdin = b
	}
	return f.run(ctx, c)
}

func (f *Fake) run(ctx context.Context, c Call) ([]byte, error) {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return nil, fmt.Errorf("systest: empty argv: %w", errdefs.ErrInvalidArgument)
	}
	// Like exec.CommandContext, a done context means nothing runs.
	if err := ctx.Err(); err != nil {
		return nil, &system.CommandError{Argv: c.Argv, ExitCode: -1, Err: err}
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	r, ok := f.matchLocked(c.Argv)
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("systest: no scripted response for %s", system.FormatArgv(c.Argv))
	}
	switch {
	case r.Func != nil:
		return r.Func(ctx, c)
	case r.Err != nil:
		return []byte(r.Stdout), r.Err
	case r.ExitCode != 0:
		return []byte(r.Stdout), &system.CommandError{
			Argv:     c.Argv,
			ExitCode: r.ExitCode,
			Stdout:   r.Stdout,
			Stderr:   r.Stderr,
			Err:      fmt.Errorf("exit status %d", r.ExitCode),
		}
	}
	return []byte(r.Stdout), nil
}

// matchLocked picks the response for argv and advances its rule.
func (f *Fake) matchLocked(argv []string) (Response, bool) {
	var best *rule
	for _, r := range f.rules {
		if !r.matches(argv) {
			continue
		}
		// Rules come in registration order, so a later rule of equal
		// specificity replaces an earlier one.
		if best == nil || !best.beats(r) {
			best = r
		}
	}
	if best == nil {
		if f.def == nil {
			return Response{}, false
		}
		return *f.def, true
	}
	resp := best.responses[best.next]
	if best.next < len(best.responses)-1 {
		best.next++
	}
	return resp, true
}

func (r *rule) matches(argv []string) bool {
	if r.prefix {
		return len(argv) >= len(r.argv) && slices.Equal(argv[:len(r.argv)], r.argv)
	}
	return slices.Equal(argv, r.argv)
}

// beats reports whether r is more specific than o.
func (r *rule) beats(o *rule) bool {
	if r.prefix != o.prefix {
		return !r.prefix
	}
	return len(r.argv) > len(o.argv)
}

// Calls returns a copy of every call so far, in order.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Call, len(f.calls))
	for i, c := range f.calls {
		out[i] = Call{Argv: slices.Clone(c.Argv), Stdin: slices.Clone(c.Stdin)}
	}
	return out
}

// Log renders every call so far, one per line, as system.FormatArgv does,
// each line ending in a newline: ready for cmp.Diff against a literal.
func (f *Fake) Log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, c := range f.calls {
		b.WriteString(system.FormatArgv(c.Argv))
		b.WriteByte('\n')
	}
	return b.String()
}

// Reset forgets the recorded calls; the script stays.
func (f *Fake) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}
