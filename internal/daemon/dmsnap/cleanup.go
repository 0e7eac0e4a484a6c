package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"

	"banger/internal/errdefs"
)

// Cleanup removes the snapshot and detaches both loops, tolerating
// objects that are already gone, so it can be repeated. A loop that no
// longer exists or is now backed by another file than h names is left
// alone. It tries every step and returns the failures joined; a snapshot
// still open (its VM running) fails with errdefs.ErrBusy, and its loops
// are then only marked to detach themselves when it goes.
func Cleanup(ctx context.Context, r Runner, h Handles) error {
	if err := h.valid(); err != nil {
		return err
	}
	var errs []error
	if h.DMName != "" {
		if _, err := r.Run(ctx, "dmsetup", "remove", "--retry", h.DMName); err != nil && !isGone(err) {
			if hasOutput(err, "Device or resource busy") {
				err = fmt.Errorf("%w: %w", err, errdefs.ErrBusy)
			}
			errs = append(errs, fmt.Errorf("dmsnap %s: remove snapshot %s: %w", h.VMID, h.DMName, err))
		}
	}
	if h.OriginLoop != "" || h.COWLoop != "" {
		loops, err := listLoops(ctx, r)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("dmsnap %s: list loop devices: %w", h.VMID, err))...)
		}
		for _, l := range []struct{ dev, file string }{{h.OriginLoop, h.Image}, {h.COWLoop, h.COW}} {
			if l.dev == "" || !stillBacks(loops, l.dev, l.file) {
				continue
			}
			if err := detach(ctx, r, l.dev); err != nil {
				errs = append(errs, fmt.Errorf("dmsnap %s: %w", h.VMID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Remove is Cleanup followed by deleting the COW file at cowPath (gone
// already is fine). The file is kept when Cleanup fails: deleting it under
// a snapshot still in use would destroy a running VM's disk.
func Remove(ctx context.Context, r Runner, h Handles, cowPath string) error {
	if err := Cleanup(ctx, r, h); err != nil {
		return err
	}
	if cowPath == "" {
		return nil
	}
	if err := os.Remove(cowPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dmsnap %s: delete COW file: %w", h.VMID, err)
	}
	return nil
}

// valid refuses Handles that name objects Create would not have made
// (read back from a damaged file, say), before any of them reaches a
// command line.
func (h Handles) valid() error {
	if h.DMName != "" {
		if err := validVMID(h.VMID); err != nil {
			return err
		}
		if h.DMName != DMName(h.VMID) {
			return fmt.Errorf("dmsnap %s: device %q is not banger's name for this VM: %w", h.VMID, h.DMName, errdefs.ErrInvalidArgument)
		}
	}
	for _, dev := range []string{h.OriginLoop, h.COWLoop} {
		if dev != "" && !loopName.MatchString(dev) {
			return fmt.Errorf("dmsnap %s: %q is not a loop device: %w", h.VMID, dev, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

var loopName = regexp.MustCompile(`^/dev/loop[0-9]+$`)

// stillBacks reports whether loop dev is attached and, when file is set,
// backed by file.
func stillBacks(loops []loopDev, dev, file string) bool {
	for _, l := range loops {
		if l.Name == dev {
			return file == "" || l.BackFile == file
		}
	}
	return false
}

// detach runs `losetup -d dev`; a loop already detached is success.
func detach(ctx context.Context, r Runner, dev string) error {
	if _, err := r.Run(ctx, "losetup", "-d", dev); err != nil && !isGone(err) {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}

// detachLoops undoes a failed Create: it detaches the loops in h, even
// when ctx is done.
func detachLoops(ctx context.Context, r Runner, h Handles) error {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	var errs []error
	for _, dev := range []string{h.COWLoop, h.OriginLoop} {
		if dev != "" {
			errs = append(errs, detach(ctx, r, dev))
		}
	}
	return errors.Join(errs...)
}
