package fcshim

import (
	"fmt"
	"os"
	"path/filepath"
)

// EnvChroot, when set in the shim's environment, is the directory a
// jailer would have chrooted the shim into (the test-only jailer shim,
// internal/testing/jailershim, sets it instead of chrooting, because the
// shim runs QEMU from the host). The shim then resolves every path it is
// given — --api-sock, --log-path and each path of the API (kernel,
// initrd, drives, logger, metrics) — inside that directory, as the
// kernel resolves a chrooted Firecracker's paths: relative to the root,
// ".." stopping at it. A path that only exists outside the root (a host
// path the caller forgot to translate) is not found, as it would not be
// in the chroot. A symbolic link that leads out of the root is refused
// (os.Root's rule); the kernel would instead resolve an absolute link
// inside the root: the shim is stricter there.
const EnvChroot = "BANGER_FCSHIM_CHROOT"

// inRoot returns the host path of p as seen by a process chrooted at root
// (p itself when root is ""). When mustExist is false only p's directory
// must exist (p is to be created).
func inRoot(root, p string, mustExist bool) (string, error) {
	if root == "" {
		return p, nil
	}
	rel := filepath.Clean("/" + p)[1:] // chroot: "/.." is "/"; Firecracker's cwd is "/"
	r, err := os.OpenRoot(root)
	if err != nil {
		return "", err
	}
	defer r.Close()
	check := rel
	if !mustExist {
		check = filepath.Dir(rel)
	}
	if check == "" {
		check = "."
	}
	if _, err := r.Stat(check); err != nil {
		return "", fmt.Errorf("%s (inside the chroot %s): %w", p, root, err)
	}
	return filepath.Join(root, rel), nil
}
