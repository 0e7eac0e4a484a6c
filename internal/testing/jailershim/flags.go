package jailershim

import (
	"fmt"
	"slices"
	"strings"
)

// flagSpec is one of the jailer's arguments (build_arg_parser in
// src/jailer/src/main.rs, v1.16.1).
type flagSpec struct {
	name       string
	takesValue bool
	required   bool
	multiple   bool
	def        string // default value, if any
	// unsupported, when set, says why the shim refuses the argument.
	unsupported string
}

var jailerFlags = []flagSpec{
	{name: "id", takesValue: true, required: true},
	{name: "exec-file", takesValue: true, required: true},
	{name: "uid", takesValue: true, required: true},
	{name: "gid", takesValue: true, required: true},
	{name: "chroot-base-dir", takesValue: true, def: "/srv/jailer"},
	{name: "netns", takesValue: true},
	{name: "daemonize", unsupported: "daemonizing (banger tracks the jailed process by the pid it spawned)"},
	{name: "new-pid-ns", unsupported: "PID namespaces"},
	{name: "cgroup", takesValue: true, multiple: true, unsupported: "cgroups"},
	{name: "resource-limit", takesValue: true, multiple: true, unsupported: "resource limits"},
	{name: "cgroup-version", takesValue: true, def: "1"},
	{name: "parent-cgroup", takesValue: true, unsupported: "cgroups"},
	{name: "version"},
	{name: "help"},
}

// args are the parsed arguments: each given (or defaulted) one's values,
// and what followed "--".
type args struct {
	values map[string][]string
	extra  []string
}

func (a args) has(name string) bool { _, ok := a.values[name]; return ok }

func (a args) get(name string) string {
	if v := a.values[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseArgs follows the jailer's ArgParser: "--name" then its value (no
// "--name=value"), known names only, given once unless they may repeat,
// values not starting with "--", required ones present; what follows a
// bare "--" is kept for the exec file.
func parseArgs(argv []string) (args, error) {
	a := args{values: map[string][]string{}}
	if i := slices.Index(argv, "--"); i >= 0 {
		a.extra = append([]string(nil), argv[i+1:]...)
		argv = argv[:i]
	}
	for i := 0; i < len(argv); i++ {
		name, ok := strings.CutPrefix(argv[i], "--")
		if !ok {
			return a, fmt.Errorf("Found argument '%s' which wasn't expected, or isn't valid in this context.", argv[i])
		}
		idx := slices.IndexFunc(jailerFlags, func(s flagSpec) bool { return s.name == name })
		if idx < 0 {
			return a, fmt.Errorf("Found argument '%s' which wasn't expected, or isn't valid in this context.", name)
		}
		spec := jailerFlags[idx]
		if a.has(name) && !spec.multiple {
			return a, fmt.Errorf("The argument '%s' was provided more than once.", name)
		}
		if !spec.takesValue {
			a.values[name] = nil
			continue
		}
		if i+1 >= len(argv) || strings.HasPrefix(argv[i+1], "--") {
			return a, fmt.Errorf("The argument '%s' requires a value, but none was supplied.", name)
		}
		a.values[name] = append(a.values[name], argv[i+1])
		i++
	}
	if a.has("help") || a.has("version") {
		return a, nil
	}
	for _, s := range jailerFlags {
		if a.has(s.name) {
			continue
		}
		if s.required {
			return a, fmt.Errorf("Argument '%s' required, but not found.", s.name)
		}
		if s.def != "" {
			a.values[s.name] = []string{s.def}
		}
	}
	return a, nil
}

// unsupported returns the first given argument the shim refuses, and why.
func (a args) unsupported() (name, why string) {
	for _, s := range jailerFlags {
		if s.unsupported != "" && a.has(s.name) {
			return s.name, s.unsupported
		}
	}
	return "", ""
}

func usage() string {
	var b strings.Builder
	b.WriteString("jailershim: a TEST-ONLY stand-in for Firecracker's jailer (no chroot; see the package doc).\n\nArguments (the jailer's):\n")
	for _, s := range jailerFlags {
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
	b.WriteString("  -- <arguments for the exec file>\n")
	return b.String()
}
