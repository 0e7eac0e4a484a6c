package system

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxErrorOutput bounds how much of a tool's output Error() repeats.
const maxErrorOutput = 4 << 10

// CommandError reports a command that could not start, exited non-zero,
// or was stopped by its context. Err is the cause: the exit status, the
// context's error, or a start failure (which wraps errdefs.ErrUnavailable
// when the executable is missing or not executable).
type CommandError struct {
	Argv     []string
	ExitCode int // -1 when the command did not start or was killed by a signal
	Stderr   string
	Stdout   string
	Err      error
}

// Error renders "argv: cause: output", where output is the trimmed stderr
// (stdout when stderr is empty), keeping at most its last 4 KiB.
func (e *CommandError) Error() string {
	var b strings.Builder
	b.WriteString(truncateHead(FormatArgv(e.Argv), maxErrorOutput))
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		fmt.Fprintf(&b, "exit status %d", e.ExitCode)
	}
	out := strings.TrimSpace(e.Stderr)
	if out == "" {
		out = strings.TrimSpace(e.Stdout)
	}
	if out != "" {
		b.WriteString(": ")
		b.WriteString(truncateTail(out, maxErrorOutput))
	}
	return b.String()
}

// Unwrap returns the cause, so errors.Is sees context.Canceled or
// errdefs.ErrUnavailable through a CommandError.
func (e *CommandError) Unwrap() error { return e.Err }

// ErrorMapper may replace a failed command's error with one that also
// wraps a sentinel (see MatchStderr). Returning nil keeps the original.
type ErrorMapper func(*CommandError) error

// MatchStderr maps a known tool message back to a sentinel: when err is
// (or wraps) a *CommandError whose stderr contains substr, it returns err
// wrapped so that errors.Is(result, sentinel) holds and errors.As still
// finds the CommandError. Otherwise it returns err unchanged. Runners force
// LC_ALL=C, so substr can be the tool's English message.
//
//	err = system.MatchStderr(err, "No such file or directory", errdefs.ErrNotFound)
func MatchStderr(err error, substr string, sentinel error) error {
	var ce *CommandError
	if errors.As(err, &ce) && strings.Contains(ce.Stderr, substr) {
		return fmt.Errorf("%w: %w", err, sentinel)
	}
	return err
}

// truncateTail keeps the last max bytes of s, cut on a rune boundary.
func truncateTail(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := len(s) - max
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return fmt.Sprintf("[%d bytes trimmed]...", i) + s[i:]
}

// truncateHead keeps the first max bytes of s, cut on a rune boundary.
func truncateHead(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + fmt.Sprintf("...[%d bytes trimmed]", len(s)-i)
}
