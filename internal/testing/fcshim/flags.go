package fcshim

import (
	"fmt"
	"slices"
	"strings"
)

// flagSpec is one of Firecracker v1.16.1's command-line arguments
// (src/firecracker/src/main.rs), and what the shim does with it.
type flagSpec struct {
	name       string
	takesValue bool
	// unsupported, when set, says why the shim refuses the argument.
	unsupported string
}

// firecrackerFlags lists every argument Firecracker takes. The shim uses
// --api-sock, --id, the logger ones (its own log) and
// --http-api-max-payload-size; accepts and ignores those without a
// guest-visible effect (seccomp, the jailer's timing arguments, the boot
// timer, the MMDS size limit); and refuses the rest, which it does not
// emulate.
var firecrackerFlags = []flagSpec{
	{name: "api-sock", takesValue: true},
	{name: "id", takesValue: true},
	{name: "seccomp-filter", takesValue: true},
	{name: "no-seccomp"},
	{name: "start-time-us", takesValue: true},
	{name: "start-time-cpu-us", takesValue: true},
	{name: "parent-cpu-time-us", takesValue: true},
	{name: "config-file", takesValue: true, unsupported: "configuration files (banger configures through the API)"},
	{name: "metadata", takesValue: true, unsupported: "MMDS"},
	{name: "no-api", unsupported: "running without the API"},
	{name: "log-path", takesValue: true},
	{name: "level", takesValue: true},
	{name: "module", takesValue: true},
	{name: "show-level"},
	{name: "show-log-origin"},
	{name: "metrics-path", takesValue: true, unsupported: "metrics from the command line"},
	{name: "boot-timer"},
	{name: "version"},
	{name: "snapshot-version", unsupported: "snapshots"},
	{name: "describe-snapshot", takesValue: true, unsupported: "snapshots"},
	{name: "http-api-max-payload-size", takesValue: true},
	{name: "mmds-size-limit", takesValue: true},
	{name: "enable-pci", unsupported: "PCI (and so device hotplug)"},
}

// parsedFlags are the arguments given: a value for each one that takes a
// value, "" for a flag.
type parsedFlags map[string]string

func (f parsedFlags) has(name string) bool { _, ok := f[name]; return ok }

// flagError is Firecracker's UtilsArgParserError: exit status 153.
type flagError struct{ msg string }

func (e *flagError) Error() string { return "Arguments parsing error: " + e.msg }

// parseFlags follows Firecracker's ArgParser (src/utils/src/arg_parser.rs):
// everything after a bare "--" is ignored; --help, -h and --version win
// over everything else; each argument is "--name" (no "--name=value"),
// known, given once, and followed by its value when it takes one (a value
// may not start with "--").
func parseFlags(args []string) (parsedFlags, error) {
	if i := slices.Index(args, "--"); i >= 0 {
		args = args[:i]
	}
	if slices.Contains(args, "--help") || slices.Contains(args, "-h") {
		return parsedFlags{"help": ""}, nil
	}
	if slices.Contains(args, "--version") {
		return parsedFlags{"version": ""}, nil
	}
	out := parsedFlags{}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		name, ok := strings.CutPrefix(arg, "--")
		if !ok {
			return nil, &flagError{fmt.Sprintf("Found argument '%s' which wasn't expected, or isn't valid in this context.", arg)}
		}
		idx := slices.IndexFunc(firecrackerFlags, func(s flagSpec) bool { return s.name == name })
		if idx < 0 {
			return nil, &flagError{fmt.Sprintf("Found argument '%s' which wasn't expected, or isn't valid in this context.", name)}
		}
		if out.has(name) {
			return nil, &flagError{fmt.Sprintf("The argument '%s' was provided more than once.", name)}
		}
		if !firecrackerFlags[idx].takesValue {
			out[name] = ""
			continue
		}
		if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
			return nil, &flagError{fmt.Sprintf("The argument '%s' requires a value, but none was supplied.", name)}
		}
		out[name] = args[i+1]
		i++
	}
	return out, nil
}

// unsupportedFlag returns the first given argument the shim refuses, and
// why.
func (f parsedFlags) unsupportedFlag() (name, why string) {
	for _, s := range firecrackerFlags {
		if s.unsupported != "" && f.has(s.name) {
			return s.name, s.unsupported
		}
	}
	return "", ""
}

func usage() string {
	var b strings.Builder
	b.WriteString("fcshim: a TEST-ONLY stand-in for Firecracker v" + VMMVersion + " that boots under QEMU.\n\nArguments (Firecracker's):\n")
	for _, s := range firecrackerFlags {
		v := ""
		if s.takesValue {
			v = " <value>"
		}
		note := ""
		if s.unsupported != "" {
			note = "  (not emulated: " + s.unsupported + ")"
		}
		fmt.Fprintf(&b, "  --%s%s%s\n", s.name, v, note)
	}
	return b.String()
}
