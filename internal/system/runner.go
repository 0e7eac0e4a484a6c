// Package system is banger's one way to run host commands. Every external
// tool (mkfs.ext4, ip, nft, dmsetup, ...) goes through a Runner: argv only,
// never a shell string, the C locale so tool messages can be matched, and
// failures reported as a *CommandError carrying the argv and the tool's
// output. Package systest holds a fake Runner for tests.
package system

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"

	"banger/internal/errdefs"
)

// Runner runs one host command and returns its standard output.
// A command that cannot start or exits non-zero yields an error; see
// ExecRunner for what that error carries.
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

// StdinRunner is the optional capability of feeding a command's standard
// input. Use RunStdin rather than asserting it by hand.
type StdinRunner interface {
	RunStdin(ctx context.Context, stdin io.Reader, argv ...string) ([]byte, error)
}

// ErrNoStdin is returned by RunStdin when the Runner cannot feed stdin.
var ErrNoStdin = fmt.Errorf("runner cannot feed a command's stdin: %w", errdefs.ErrUnavailable)

// RunStdin runs argv on r with stdin as its standard input, or fails with
// ErrNoStdin when r does not implement StdinRunner.
func RunStdin(ctx context.Context, r Runner, stdin io.Reader, argv ...string) ([]byte, error) {
	sr, ok := r.(StdinRunner)
	if !ok {
		return nil, fmt.Errorf("%s: %w", FormatArgv(argv), ErrNoStdin)
	}
	return sr.RunStdin(ctx, stdin, argv...)
}

// FormatArgv renders argv as one line: arguments joined by spaces, and an
// argument Go-quoted when it is empty or holds spaces, quotes, backslashes
// or unprintable characters. It is for messages and test logs, never for
// a shell.
func FormatArgv(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if needsQuote(a) {
			a = strconv.Quote(a)
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}

func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' || r == '\'' || r == '\\'
	}) >= 0
}
