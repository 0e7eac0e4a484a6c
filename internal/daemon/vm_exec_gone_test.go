package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"

	"banger/internal/errdefs"
)

// A VM whose VMM dies while a command runs in it: exec ends with an error
// saying the VM stopped, as a failed precondition, not a bare EOF.
func TestExecWhenTheVMMDies(t *testing.T) {
	e := vmtSetup(t, nil)
	vm := e.mustCreate(t, "dies")
	p := e.vmm.latest(func(p *vmtProc) bool { return p.vm == vm.ID })
	if p == nil {
		t.Fatal("no fake VMM")
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		p.cmd.Process.Kill()
	}()
	_, _, err := e.exec("dies", "sleep", "10")
	if err == nil || !strings.Contains(err.Error(), "stopped while the command ran (its VMM exited)") || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("exec as the VMM died = %v; want the VM stopped while the command ran, a failed precondition", err)
	}
}
