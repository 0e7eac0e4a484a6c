package imagemgr

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// checkPrivate fails unless some directory above root is owned by this
// process's user and closed to everyone else (no group or other execute
// bit), so that nobody else can reach what is flattened into root.
func checkPrivate(root string) error {
	abs, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	euid := uint32(os.Geteuid())
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			return &os.PathError{Op: "stat", Path: d, Err: err}
		}
		if st.Uid == euid && st.Mode&0o011 == 0 {
			return nil
		}
		if d == "/" {
			break
		}
	}
	return fmt.Errorf("staging root %s can be reached by other users: make a directory above it mode 0700 (the flattened image holds setuid files and device nodes): %w",
		root, errdefs.ErrFailedPrecondition)
}
