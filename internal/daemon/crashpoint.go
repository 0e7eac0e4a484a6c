package daemon

import (
	"os"
	"syscall"
)

// crashAt names the point at which the daemon kills itself, from
// BANGER_TEST_CRASH_AT in its environment: fault injection for the
// crash-safety soak test (test/e2e), which restarts the daemon after and
// checks that nothing was lost or leaked. Unset, crashPoint does nothing.
var crashAt = os.Getenv("BANGER_TEST_CRASH_AT")

// crashPoint SIGKILLs the daemon, as a power cut or the OOM killer would,
// when name is the configured point. The points are named op.phase:
// create.recorded, create.disk, boot.tap, boot.spawned, boot.vmm,
// boot.ready (create and start), stop.recorded, stop.released, rm.recorded, rm.stopped,
// rm.files; for images: image.staged (pull, import, promote: the pending
// row recorded, staging made), pull.layers (the first layer cached),
// pull.flattened, pull.built (the ext4 built in staging), import.built,
// promote.copied, image.moved (the rootfs moved into the image's
// directory, the row not yet ready); and op.finished (any async op's
// success recorded, its watchers not yet told).
func crashPoint(name string) {
	if crashAt == "" || crashAt != name {
		return
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
