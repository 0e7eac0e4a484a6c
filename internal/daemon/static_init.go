package daemon

import (
	"debug/elf"
	"fmt"

	"banger/internal/errdefs"
)

// checkStaticInit makes sure the binary injected into images as their init
// can run there: a static executable, with no ELF interpreter (a banger
// built with cgo would need the host's libc, which images lack, and every
// VM would die at boot with "No such file or directory").
func checkStaticInit(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("the guest init %s is not an ELF executable: %v: %w", path, err, errdefs.ErrFailedPrecondition)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("the banger binary %s is dynamically linked, so it cannot be the guests' init: rebuild it with CGO_ENABLED=0 (scripts/install.sh does): %w", path, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}
