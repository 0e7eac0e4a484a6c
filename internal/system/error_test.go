package system

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"banger/internal/errdefs"
)

func TestCommandErrorMessage(t *testing.T) {
	long := strings.Repeat("x", 2*maxErrorOutput) + "the end"
	tests := []struct {
		name string
		err  *CommandError
		want string
	}{
		{
			name: "stderr trimmed",
			err:  &CommandError{Argv: []string{"mkfs.ext4", "-q", "/x"}, ExitCode: 1, Stderr: "\n bad things \n", Err: errors.New("exit status 1")},
			want: "mkfs.ext4 -q /x: exit status 1: bad things",
		},
		{
			name: "stdout when stderr empty",
			err:  &CommandError{Argv: []string{"tool"}, ExitCode: 2, Stdout: "oops\n", Err: errors.New("exit status 2")},
			want: "tool: exit status 2: oops",
		},
		{
			name: "no output",
			err:  &CommandError{Argv: []string{"tool"}, ExitCode: 2, Err: errors.New("exit status 2")},
			want: "tool: exit status 2",
		},
		{
			name: "nil cause",
			err:  &CommandError{Argv: []string{"tool"}, ExitCode: 4},
			want: "tool: exit status 4",
		},
		{
			name: "long stderr keeps its tail",
			err:  &CommandError{Argv: []string{"tool"}, ExitCode: 1, Stderr: long, Err: errors.New("exit status 1")},
			want: "tool: exit status 1: [4103 bytes trimmed]..." + long[len(long)-maxErrorOutput:],
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMatchStderr(t *testing.T) {
	ce := &CommandError{Argv: []string{"nft", "delete", "table", "inet", "banger"}, ExitCode: 1,
		Stderr: "Error: No such file or directory\n", Err: errors.New("exit status 1")}
	tests := []struct {
		name     string
		err      error
		substr   string
		wantSent bool
	}{
		{name: "match", err: ce, substr: "No such file", wantSent: true},
		{name: "wrapped match", err: fmt.Errorf("delete table: %w", ce), substr: "No such file", wantSent: true},
		{name: "no match", err: ce, substr: "Permission denied"},
		{name: "not a command error", err: errors.New("No such file"), substr: "No such file"},
		{name: "nil", err: nil, substr: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MatchStderr(tt.err, tt.substr, errdefs.ErrNotFound)
			if is := errors.Is(got, errdefs.ErrNotFound); is != tt.wantSent {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v, want %v", got, is, tt.wantSent)
			}
			if !tt.wantSent && got != tt.err {
				t.Errorf("MatchStderr changed an unmatched error: %v", got)
			}
			var back *CommandError
			if tt.wantSent && !errors.As(got, &back) {
				t.Errorf("mapped error %v lost its *CommandError", got)
			}
		})
	}
}

func TestFormatArgv(t *testing.T) {
	tests := []struct {
		argv []string
		want string
	}{
		{nil, ""},
		{[]string{"ip", "link", "set", "tap0", "up"}, "ip link set tap0 up"},
		{[]string{"sh", "-c", "echo hi"}, `sh -c "echo hi"`},
		{[]string{"printf", ""}, `printf ""`},
		{[]string{"echo", `a"b`, `c\d`, "it's", "tab\there"}, `echo "a\"b" "c\\d" "it's" "tab\there"`},
		{[]string{"mkfs.ext4", "-L", "root=/dev/vda"}, "mkfs.ext4 -L root=/dev/vda"},
	}
	for _, tt := range tests {
		if got := FormatArgv(tt.argv); got != tt.want {
			t.Errorf("FormatArgv(%q) = %s, want %s", tt.argv, got, tt.want)
		}
	}
}
