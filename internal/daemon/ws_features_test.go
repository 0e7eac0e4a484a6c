package daemon

import (
	"testing"

	"banger/internal/daemon/workspace"
	"banger/internal/guestinit"
)

// TestGuestUntarFeatures: this init's untar says it rebuilds git packs and
// reads zstd; an init older than the question (no features built-in: it
// exits 127) gets the plain form, and that is not an error.
func TestGuestUntarFeatures(t *testing.T) {
	e := vmtSetup(t, nil)
	vm := e.mustCreate(t, "feat")
	h, ok := e.d.vms.handles.get(vm.ID)
	if !ok {
		t.Fatal("no handles for the VM")
	}
	c, hangUp, err := e.d.workspaces.dialScoped(e.ctx(), h)
	if err != nil {
		t.Fatal(err)
	}
	defer hangUp()

	opt, err := guestUntarFeatures(e.ctx(), c, workspace.GuestFeaturesArgv())
	if err != nil || !opt.GitPacks || !opt.Zstd || !opt.TarNoGit {
		t.Errorf("this init: %+v, %v; want GitPacks, Zstd and TarNoGit", opt, err)
	}
	old := []string{guestinit.InitPath, "no-such-built-in"} // what an older init answers
	opt, err = guestUntarFeatures(e.ctx(), c, old)
	if err != nil || opt != (workspace.PackOptions{}) {
		t.Errorf("an older init: %+v, %v; want nothing and no error", opt, err)
	}
}
