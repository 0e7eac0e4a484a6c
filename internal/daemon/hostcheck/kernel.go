package hostcheck

import (
	"path"
	"strings"
)

// moduleState is what the host says about a kernel module.
type moduleState int

const (
	// moduleUnknown: not loaded, and /lib/modules has no lists to ask.
	moduleUnknown moduleState = iota
	// moduleAbsent: neither loaded, built in, nor installed.
	moduleAbsent
	// moduleLoaded: /sys/module/NAME exists (loaded, or built in with
	// parameters).
	moduleLoaded
	// moduleBuiltin: listed in modules.builtin.
	moduleBuiltin
	// moduleInstalled: listed in modules.dep; the kernel loads it on
	// first use, or `modprobe NAME` does.
	moduleInstalled
)

// available reports whether the kernel has the module or will load it.
func (s moduleState) available() bool { return s >= moduleLoaded }

func (s moduleState) String() string {
	switch s {
	case moduleAbsent:
		return "absent"
	case moduleLoaded:
		return "loaded"
	case moduleBuiltin:
		return "built in"
	case moduleInstalled:
		return "installed, loaded on demand"
	}
	return "unknown"
}

// module finds out whether the running kernel has module name (spelled
// with underscores, as in /sys/module).
func (p *prober) module(name string) moduleState {
	if p.exists("/sys/module/" + name) {
		return moduleLoaded
	}
	rel, err := p.host.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return moduleUnknown
	}
	dir := "/lib/modules/" + strings.TrimSpace(string(rel)) + "/"
	state := moduleUnknown
	for _, l := range []struct {
		file  string
		state moduleState
	}{{"modules.builtin", moduleBuiltin}, {"modules.dep", moduleInstalled}} {
		b, err := p.host.ReadFile(dir + l.file)
		if err != nil {
			continue
		}
		state = moduleAbsent
		if listsModule(b, name) {
			return l.state
		}
	}
	return state
}

// listsModule reports whether a modules.builtin or modules.dep file lists
// module name ("kernel/drivers/md/dm-snapshot.ko.xz: ..." is dm_snapshot).
func listsModule(list []byte, name string) bool {
	for line := range strings.Lines(string(list)) {
		file, _, _ := strings.Cut(strings.TrimSpace(line), ":")
		base, _, found := strings.Cut(path.Base(file), ".ko")
		if found && strings.ReplaceAll(base, "-", "_") == name {
			return true
		}
	}
	return false
}
