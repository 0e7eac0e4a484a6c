package fcshim

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The environment that makes the shim's executable exec QEMU (execQEMU)
// instead of serving the API. QEMUBooter sets it in the shim's own
// environment, which qemu.Start passes on to the program it runs.
const (
	envExecQEMU  = "BANGER_FCSHIM_EXEC_QEMU"  // the QEMU executable to exec
	envParentPID = "BANGER_FCSHIM_PARENT_PID" // the shim's pid
)

// execQEMU runs in the process qemu.Start spawned, before QEMU: it asks the
// kernel to SIGKILL this process when its parent (the shim) dies, then
// execs QEMU with the same arguments, so the signal request applies to
// QEMU (it survives execve). qemu.Start puts QEMU in its own process group
// and sets no parent-death signal (a daemon's QEMU must outlive the
// daemon); a test's QEMU must not outlive its shim, even one killed with
// SIGKILL.
func execQEMU(qemuPath string, args []string, stderr io.Writer) int {
	// The request and the exec must happen on the same thread: the kernel
	// keeps the parent-death signal per thread.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		fmt.Fprintf(stderr, "fcshim: prctl(PR_SET_PDEATHSIG): %v\n", err)
		return 1
	}
	// The shim may have died before the request was made.
	if want := os.Getenv(envParentPID); want != strconv.Itoa(os.Getppid()) {
		fmt.Fprintf(stderr, "fcshim: the shim (pid %s) exited before QEMU started\n", want)
		return 1
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envExecQEMU+"=") && !strings.HasPrefix(kv, envParentPID+"=") {
			env = append(env, kv)
		}
	}
	err := syscall.Exec(qemuPath, append([]string{qemuPath}, args...), env)
	fmt.Fprintf(stderr, "fcshim: exec %s: %v\n", qemuPath, err)
	return 127
}
