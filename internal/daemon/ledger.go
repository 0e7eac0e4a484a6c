package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/fcproc"
	"banger/internal/daemon/vmnet"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// The ledger: every host object banger makes carries its owner in its
// name, path or command line, so the daemon can list them all and tell
// which no record owns without keeping a second database that a crash
// could leave out of step with the host:
//
//   - a VM's TAP is vmnet.TAPName(id) (bgt + the id's first 12 hex
//     digits), in the VM network's namespace; idle pool TAPs are bgtp…;
//   - a VMM process names its VM on its command line (QEMU's -name
//     guest=banger-ID, Firecracker's --id ID) and the VM's directory
//     under this daemon's root (disk, sockets), which tells this daemon's
//     VMMs from another's;
//   - VM, image and kernel directories are named by their record's id
//     under the root;
//   - a loop device's backing file is a VM's disk or an image's rootfs
//     under the root; a device-mapper device is banger-<VM id>;
//   - a jailed Firecracker's jail is <jailer_chroot_base>/<firecracker>/ID;
//   - the nftables table (config `table`'s name, in the VM network's
//     namespace) is the daemon's own, and holds no per-VM rules.
//
// Ownership of a VM's objects is judged under vmLocks[id] (TryLock: a VM
// an op is busy with is skipped until the next pass), so the sweep never
// races a create, start or rm.

// ledgerEntry is one object and how to remove it.
type ledgerEntry struct {
	rpc.HostObject
	remove func(ctx context.Context) error
}

// ledger lists the host objects this daemon made, deciding for each VM
// object whether its VM's record still owns it.
func (m *vmManager) ledger(ctx context.Context) ([]ledgerEntry, error) {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]store.VM, len(vms))
	for _, vm := range vms {
		byID[vm.ID] = vm
	}
	// find is the recorded VM an object names (match), or "". The host is
	// listed after this snapshot of the records, and a create records its
	// VM before it makes any host object: so on a miss the records are
	// read again, and an object a create made meanwhile finds its VM.
	find := func(match func(id string) bool) string {
		for reread := false; ; reread = true {
			for vid := range byID {
				if match(vid) {
					return vid
				}
			}
			if reread {
				return ""
			}
			vms, err := m.store.ListVMs(ctx)
			if err != nil {
				return ""
			}
			for _, vm := range vms {
				byID[vm.ID] = vm
			}
		}
	}
	// owned reports whether VM id's record owns an object that its
	// handles name as has(h); a VM an op holds is skipped (ok false).
	owned := func(id string, has func(h *vmHandles) bool) (owner bool, ok bool, why string) {
		if find(func(vid string) bool { return vid == id }) == "" {
			return false, true, "no VM record " + id
		}
		unlock, got := m.locks.TryLock(id)
		if !got {
			return true, false, ""
		}
		defer unlock()
		if _, err := m.store.GetVM(ctx, id); errdefs.IsNotFound(err) {
			return false, true, "no VM record " + id
		}
		h, cached := m.handles.get(id)
		if cached && has(h) {
			return true, true, ""
		}
		return false, true, "vm " + id + "'s handles do not name it"
	}

	var out []ledgerEntry
	add := func(e ledgerEntry) { out = append(out, e) }

	// TAPs, in the VM network's namespace (if the network is up).
	m.netMu.Lock()
	n := m.net
	m.netMu.Unlock()
	if n != nil {
		taps, err := n.VMTAPs()
		if err != nil {
			return nil, err
		}
		for _, tap := range taps {
			prefix, _ := vmnet.VMIDPrefix(tap)
			id := find(func(vid string) bool { return strings.HasPrefix(vid, prefix) })
			e := ledgerEntry{HostObject: rpc.HostObject{Kind: "tap", Name: tap}}
			if id == "" {
				e.Orphan, e.Why = true, "no VM id starts with "+prefix
			} else {
				e.Owner = "vm:" + id
				isOwner, ok, why := owned(id, func(h *vmHandles) bool { return h.TAP == tap })
				if !ok {
					continue
				}
				e.Orphan, e.Why = !isOwner, why
			}
			tap := tap
			e.remove = func(context.Context) error { return n.TAPs().Release(tap) }
			add(e)
		}
		add(ledgerEntry{HostObject: rpc.HostObject{Kind: "nft-table", Name: "inet " + n.Config().Table + " (netns " + m.config.NetNS + ")", Owner: "daemon"}})
	}

	// VMM processes.
	procs, err := m.scanVMMs()
	if err != nil {
		return nil, err
	}
	for _, p := range procs {
		e := ledgerEntry{HostObject: rpc.HostObject{Kind: "vmm", Name: strconv.Itoa(p.pid), Owner: "vm:" + p.id}}
		// A VMM may run helpers of its own (the test-only Firecracker shim
		// runs QEMU): a descendant of the recorded VMM is the VM's too.
		isOwner, ok, why := owned(p.id, func(h *vmHandles) bool { return h.PID > 0 && descendsFrom(p.pid, h.PID) })
		if !ok {
			continue
		}
		e.Orphan, e.Why = !isOwner, why
		p := p
		e.remove = func(context.Context) error { return killVerified(p) }
		add(e)
	}

	// VM directories: each owned by its VM's record (read under the VM's
	// lock: a create records the VM before it makes the directory, an rm
	// removes the directory before the record).
	entries, err := os.ReadDir(m.layout.VMsDir())
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, de := range entries {
		id, path := de.Name(), filepath.Join(m.layout.VMsDir(), de.Name())
		unlock, got := m.locks.TryLock(id)
		if !got {
			continue
		}
		_, err := m.store.GetVM(ctx, id)
		unlock()
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, err
		}
		e := ledgerEntry{HostObject: rpc.HostObject{Kind: "vm-dir", Name: path, Owner: "vm:" + id}}
		if err != nil {
			e.Orphan, e.Why = true, "no VM record "+id
		}
		e.remove = func(context.Context) error { return os.RemoveAll(path) }
		add(e)
	}

	// Jails of a jailed Firecracker: <base>/<firecracker>/<VM id>, each
	// owned by a VM whose Firecracker runs.
	if m.config.JailerBinary != "" {
		dir := filepath.Join(m.config.JailBase(), filepath.Base(m.config.FirecrackerBinary))
		entries, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		for _, de := range entries {
			id := de.Name()
			if !validID(id) {
				continue // not a VM's jail
			}
			e := ledgerEntry{HostObject: rpc.HostObject{Kind: "jail", Name: filepath.Join(dir, id), Owner: "vm:" + id}}
			isOwner, ok, why := owned(id, func(h *vmHandles) bool { return h.proc != nil })
			if !ok {
				continue
			}
			e.Orphan, e.Why = !isOwner, why
			e.remove = func(context.Context) error { return m.removeVMJail(id) }
			add(e)
		}
	}

	// Loop and device-mapper devices (dmsnap disks).
	loops, err := m.scanLoops(ctx)
	if err != nil {
		m.logger.Debug("list loop devices", "err", err)
	}
	for _, l := range loops {
		e := ledgerEntry{HostObject: rpc.HostObject{Kind: "loop", Name: l.dev + " (" + l.backing + ")", Owner: "vm:" + l.vm}}
		var isOwner, ok bool
		var why string
		if l.vm != "" {
			isOwner, ok, why = owned(l.vm, func(h *vmHandles) bool { return holdsLoop(h, l.dev) })
		} else {
			// An image's rootfs, the origin of some VM's snapshot.
			e.Owner = "vm holding " + l.dev
			isOwner, ok, why = false, true, "no VM's handles name it"
			for id := range byID {
				if o, k, _ := owned(id, func(h *vmHandles) bool { return holdsLoop(h, l.dev) }); o || !k {
					isOwner = true
					break
				}
			}
		}
		if !ok {
			continue
		}
		e.Orphan, e.Why = !isOwner, why
		dev := l.dev
		e.remove = func(ctx context.Context) error { _, err := m.runner.Run(ctx, "losetup", "-d", dev); return err }
		add(e)
	}
	for _, name := range m.scanDM(ctx) {
		id := strings.TrimPrefix(name, dmsnap.DMName(""))
		e := ledgerEntry{HostObject: rpc.HostObject{Kind: "dm", Name: name, Owner: "vm:" + id}}
		isOwner, ok, why := owned(id, func(h *vmHandles) bool { return h.DMSnap != nil })
		if !ok {
			continue
		}
		// Device-mapper names are host-wide: scanDM lists only those
		// whose VM this daemon knows or whose directory is in its root.
		e.Orphan, e.Why = !isOwner, why
		name := name
		e.remove = func(ctx context.Context) error { _, err := m.runner.Run(ctx, "dmsetup", "remove", name); return err }
		add(e)
	}
	return out, nil
}

// validID: a record id as store.NewID makes them (16 lower-case hex).
func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// vmmProc is a process whose command line names a VM of this daemon.
type vmmProc struct {
	pid   int
	id    string
	start uint64
}

// scanVMMs lists the VMM processes of this daemon's VMs: their command
// line names a VM (QEMU's guest=banger-ID, Firecracker's --id ID) and a
// path under that VM's directory in this daemon's root.
func (m *vmManager) scanVMMs() ([]vmmProc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var out []vmmProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		argv, err := procCmdline(pid)
		if err != nil || len(argv) == 0 {
			continue
		}
		id, ok := vmIDFromArgv(argv)
		if !ok || !mentions(argv, m.layout.VMDir(id)+"/") {
			continue
		}
		start, err := procStartTime(pid)
		if err != nil {
			continue
		}
		out = append(out, vmmProc{pid: pid, id: id, start: start})
	}
	return out, nil
}

// descendsFrom reports whether pid is ancestor or one of its descendants
// (following parent PIDs in /proc, a few generations up).
func descendsFrom(pid, ancestor int) bool {
	for i := 0; i < 8 && pid > 1; i++ {
		if pid == ancestor {
			return true
		}
		f, err := procStat(pid)
		if err != nil {
			return false
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			return false
		}
	}
	return false
}

// vmIDFromArgv finds the VM a VMM command line names: a guest=banger-ID
// element of a comma-separated argument (QEMU's -name), or Firecracker's
// --id.
func vmIDFromArgv(argv []string) (string, bool) {
	for _, a := range argv {
		for _, kv := range strings.Split(a, ",") {
			if id, ok := strings.CutPrefix(kv, "guest=banger-"); ok && validID(id) {
				return id, true
			}
		}
	}
	if id, ok := fcproc.IDFromArgv(argv); ok && validID(id) {
		return id, true
	}
	return "", false
}

func mentions(argv []string, path string) bool {
	for _, a := range argv {
		if strings.Contains(a, path) {
			return true
		}
	}
	return false
}

// killVerified sends p SIGKILL if it is still the same process (its start
// time), through a pidfd opened before the check, so a recycled PID is
// never signalled. It does not wait: the next pass sees whether it went.
func killVerified(p vmmProc) error {
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err == unix.ESRCH {
		return nil // gone already
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", p.pid, err)
	}
	defer unix.Close(fd)
	if start, err := procStartTime(p.pid); err != nil || start != p.start {
		return nil // gone, or the pid is a newer process's: leave it
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && err != unix.ESRCH {
		return err
	}
	return nil
}

func holdsLoop(h *vmHandles, dev string) bool {
	return h.DMSnap != nil && (h.DMSnap.OriginLoop == dev || h.DMSnap.COWLoop == dev)
}

// loopDev is a loop device backed by a file under a VM's directory (vm
// set) or an image's (vm empty).
type loopDev struct{ dev, backing, vm string }

// scanLoops lists the loop devices whose backing file is in one of this
// daemon's VM directories.
func (m *vmManager) scanLoops(ctx context.Context) ([]loopDev, error) {
	if _, err := exec.LookPath("losetup"); err != nil {
		return nil, nil
	}
	out, err := m.runner.Run(ctx, "losetup", "--list", "--json", "--output", "NAME,BACK-FILE")
	if err != nil {
		return nil, err
	}
	var l struct {
		Devices []struct {
			Name     string `json:"name"`
			BackFile string `json:"back-file"`
		} `json:"loopdevices"`
	}
	if len(strings.TrimSpace(string(out))) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(out, &l); err != nil {
		return nil, fmt.Errorf("losetup --json: %w", err)
	}
	var devs []loopDev
	for _, d := range l.Devices {
		back := strings.TrimSuffix(d.BackFile, " (deleted)")
		if rest, ok := strings.CutPrefix(back, m.layout.VMsDir()+"/"); ok {
			if id, _, _ := strings.Cut(rest, "/"); validID(id) {
				devs = append(devs, loopDev{dev: d.Name, backing: d.BackFile, vm: id})
			}
		} else if strings.HasPrefix(back, m.layout.ImagesDir()+"/") {
			devs = append(devs, loopDev{dev: d.Name, backing: d.BackFile})
		}
	}
	return devs, nil
}

// scanDM lists device-mapper devices named banger-<VM id> whose VM this
// daemon knows or whose directory is under its root.
func (m *vmManager) scanDM(ctx context.Context) []string {
	if _, err := exec.LookPath("dmsetup"); err != nil {
		return nil
	}
	out, err := m.runner.Run(ctx, "dmsetup", "ls")
	if err != nil {
		return nil
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		id, ok := strings.CutPrefix(f[0], dmsnap.DMName(""))
		if !ok || !validID(id) {
			continue
		}
		if _, err := m.store.GetVM(ctx, id); err != nil {
			if _, err := os.Stat(m.layout.VMDir(id)); err != nil {
				continue // another daemon's, or not banger's
			}
		}
		names = append(names, f[0])
	}
	return names
}

// reconcile lists the ledger and, unless dryRun, removes the orphans.
func (m *vmManager) reconcileHost(ctx context.Context, dryRun bool) ([]rpc.HostObject, error) {
	entries, err := m.ledger(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]rpc.HostObject, 0, len(entries))
	for _, e := range entries {
		if e.Orphan && !dryRun && e.remove != nil {
			if err := e.remove(ctx); err != nil {
				e.Error = err.Error()
				m.logger.Warn("remove an orphaned host object", "kind", e.Kind, "name", e.Name, "err", err)
			} else {
				e.Removed = true
				m.logger.Warn("removed a host object no record owns", "kind", e.Kind, "name", e.Name, "why", e.Why)
			}
		}
		out = append(out, e.HostObject)
	}
	return out, nil
}
