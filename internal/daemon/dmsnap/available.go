package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// controlPath is device-mapper's control node; a test seam.
var controlPath = "/dev/mapper/control"

// Available says whether this host can make dmsnap disks: the kernel has
// device-mapper (its control node exists) and `dmsetup targets` lists
// the snapshot target. The error wraps errdefs.ErrUnavailable and says
// what is missing.
//
// The control node is checked by opening it before dmsetup runs:
// libdevmapper creates a missing node, and Available must not change the
// host.
func Available(ctx context.Context, r Runner) error {
	f, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("no device-mapper in this kernel: %s missing: %w", controlPath, errdefs.ErrUnavailable)
	case errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO):
		return fmt.Errorf("no device-mapper in this kernel: %s does not open: %w: %w", controlPath, err, errdefs.ErrUnavailable)
	case err != nil:
		return fmt.Errorf("device-mapper: %w: %w", err, errdefs.ErrUnavailable)
	}
	f.Close()
	out, err := r.Run(ctx, "dmsetup", "targets")
	if err != nil {
		return fmt.Errorf("device-mapper: list targets: %w: %w", err, errdefs.ErrUnavailable)
	}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "snapshot" {
			return nil
		}
	}
	return fmt.Errorf("device-mapper has no snapshot target (modprobe dm_snapshot): %w", errdefs.ErrUnavailable)
}
