package qemu

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"banger/internal/errdefs"
)

// Runner runs a short host command given as argv (never a shell string)
// and returns its stdout; the error carries the argv and the tool's
// output. banger's system.Runner satisfies it. QEMU itself is not run
// through it: it outlives any one call (see Start).
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

var versionLine = regexp.MustCompile(`QEMU emulator version ([0-9]+\.[0-9]+(?:\.[0-9]+)?)`)

// Version returns the version of the QEMU binary ("7.2.22"), from
// `BINARY --version`. An empty binary means DefaultBinary.
func Version(ctx context.Context, r Runner, binary string) (string, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	out, err := r.Run(ctx, binary, "--version")
	if err != nil {
		return "", fmt.Errorf("QEMU version: %w", err)
	}
	v, ok := parseVersion(out)
	if !ok {
		return "", fmt.Errorf("QEMU version: %s --version printed no \"QEMU emulator version\" line: %q: %w", binary, firstLine(out), errdefs.ErrUnavailable)
	}
	return v, nil
}

func parseVersion(out []byte) (string, bool) {
	m := versionLine.FindSubmatch(out)
	if m == nil {
		return "", false
	}
	return string(m[1]), true
}

// CheckMicrovm fails, wrapping errdefs.ErrUnavailable, unless the QEMU
// binary lists the microvm machine (`BINARY -machine help`); some builds
// leave it out.
func CheckMicrovm(ctx context.Context, r Runner, binary string) error {
	if binary == "" {
		binary = DefaultBinary
	}
	out, err := r.Run(ctx, binary, "-machine", "help")
	if err != nil {
		return fmt.Errorf("listing QEMU's machines: %w", err)
	}
	if !listsMicrovm(out) {
		return fmt.Errorf("%s has no microvm machine (`%s -machine help` does not list it); install a QEMU built with it, such as Debian's qemu-system-x86: %w", binary, binary, errdefs.ErrUnavailable)
	}
	return nil
}

func listsMicrovm(out []byte) bool {
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "microvm" {
			return true
		}
	}
	return false
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
