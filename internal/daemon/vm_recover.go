package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"banger/internal/store"
)

// recover runs at Open. Adopting VMs that outlived a daemon restart comes
// with reconciliation (a later issue); until then a VM whose daemon went
// away is stopped: its VMM, if still ours and alive, is killed, and the VM
// is marked stopped with the reason. Its handles are loaded so that rm
// releases its TAP and files.
func (m *vmManager) recover(ctx context.Context) error {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	for _, vm := range vms {
		h := &vmHandles{}
		if data, err := os.ReadFile(m.layout.VMHandles(vm.ID)); err == nil {
			if err := json.Unmarshal(data, h); err != nil {
				m.logger.Warn("unreadable handles.json", "vm", vm.Name, "err", err)
			}
		}
		if h.PID > 0 && isOurVMM(h.PID, vm.ID) {
			syscall.Kill(h.PID, syscall.SIGKILL)
			waitGone(h.PID, 5*time.Second)
			m.logger.Warn("stopped a VM left running by a previous daemon", "vm", vm.Name, "pid", h.PID)
		}
		h.PID, h.proc, h.HostKey = 0, nil, ""
		m.handles.put(vm.ID, h)
		if vm.State == store.VMStopped {
			continue
		}
		reason := "the daemon restarted; VMs do not yet survive a daemon restart"
		if vm.State == store.VMCreated || vm.State == store.VMStarting {
			reason = "the daemon stopped while the VM was being created"
		}
		if err := m.updateVM(ctx, vm.ID, func(v *store.VM) { v.State, v.StateReason = store.VMStopped, reason }); err != nil {
			return fmt.Errorf("mark vm %q stopped: %w", vm.Name, err)
		}
	}
	return nil
}

// isOurVMM reports whether pid runs a VMM for VM id: its command line
// names the id (QEMU's -name guest=banger-ID, Firecracker's --id ID).
func isOurVMM(pid int, id string) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	for _, arg := range bytes.Split(data, []byte{0}) {
		if string(arg) == id || bytes.HasSuffix(arg, []byte("banger-"+id)) {
			return true
		}
	}
	return false
}

func waitGone(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
