package daemon

import (
	"fmt"
	"sort"
	"strings"

	"banger/internal/errdefs"
	"banger/internal/rpc"
)

// Limits on what vm.exec hands to the guest's execve (docs/rpc.md). A
// request beyond them is refused before anything reaches the guest.
const (
	// maxExecArg bounds one argv element or one KEY=VALUE: Linux's
	// MAX_ARG_STRLEN is 128 KiB with the terminating NUL.
	maxExecArg = 128<<10 - 1
	// maxExecBytes bounds argv and env together. Linux takes up to a
	// quarter of the stack limit (2 MiB by default) and the guest init
	// adds variables of its own; the request line is capped at 1 MiB.
	maxExecBytes = 512 << 10
	// maxExecEnv bounds the variables: each is one SSH request to the
	// guest.
	maxExecEnv = 4096
)

// checkExecParams refuses an argv or env that no command line can carry
// (a NUL byte, a variable name with '=') or that is beyond the limits.
func checkExecParams(p rpc.VMExecParams) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf(format+": nothing was run: %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	total := 0
	for i, a := range p.Argv {
		switch {
		case strings.IndexByte(a, 0) >= 0:
			return bad("argv[%d] contains a NUL byte, which no command line can carry", i)
		case len(a) > maxExecArg:
			return bad("argv[%d] is %d bytes: want at most 128 KiB per argument", i, len(a))
		}
		total += len(a) + 1
	}
	if len(p.Env) > maxExecEnv {
		return bad("%d environment variables: want at most %d variables", len(p.Env), maxExecEnv)
	}
	names := make([]string, 0, len(p.Env))
	for k := range p.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := p.Env[k]
		switch {
		case k == "" || strings.IndexByte(k, '=') >= 0:
			return bad("environment variable name %q: want a non-empty name without '='", k)
		case strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0:
			return bad("environment variable %q contains a NUL byte, which no environment can carry", k)
		case len(k)+1+len(v) > maxExecArg:
			return bad("environment variable %s is %d bytes: want at most 128 KiB per variable", k, len(k)+1+len(v))
		}
		total += len(k) + len(v) + 2
	}
	for what, s := range map[string]string{"workdir": p.Workdir, "user": p.User} {
		if strings.IndexByte(s, 0) >= 0 {
			return bad("%s contains a NUL byte", what)
		}
	}
	if total > maxExecBytes {
		return bad("argv and environment are %d KiB together: want at most 512 KiB", (total+1023)>>10)
	}
	return nil
}
