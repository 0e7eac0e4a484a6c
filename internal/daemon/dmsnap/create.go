package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"banger/internal/errdefs"
)

// undoTimeout bounds the commands that undo a failed Create or run a
// Cleanup after the caller's context is done.
const undoTimeout = 30 * time.Second

// Create attaches spec.Image read-only and spec.COW to loop devices and
// makes the snapshot banger-<vmid> over them. On failure it detaches the
// loops it attached (even when ctx is done) and returns an error naming
// the step; a device of that name that already exists is left alone and
// reported as errdefs.ErrAlreadyExists.
func Create(ctx context.Context, r Runner, spec Spec) (Handles, error) {
	if err := validVMID(spec.VMID); err != nil {
		return Handles{}, err
	}
	if spec.Image == "" || spec.COW == "" {
		return Handles{}, fmt.Errorf("dmsnap %s: image and COW file are both required: %w", spec.VMID, errdefs.ErrInvalidArgument)
	}
	h := Handles{VMID: spec.VMID, Image: absPath(spec.Image), COW: absPath(spec.COW)}
	fail := func(step string, err error) (Handles, error) {
		err = fmt.Errorf("dmsnap %s: %s: %w", spec.VMID, step, err)
		if undoErr := detachLoops(ctx, r, h); undoErr != nil {
			err = errors.Join(err, fmt.Errorf("dmsnap %s: undo: %w", spec.VMID, undoErr))
		}
		return Handles{}, err
	}

	var err error
	if h.OriginLoop, err = attach(ctx, r, "--read-only", h.Image); err != nil {
		return fail("attach image "+h.Image+" read-only to a loop device", err)
	}
	if h.COWLoop, err = attach(ctx, r, h.COW); err != nil {
		return fail("attach COW file "+h.COW+" to a loop device", err)
	}
	sectors, err := sizeSectors(ctx, r, h.OriginLoop)
	if err != nil {
		return fail("size image loop "+h.OriginLoop, err)
	}
	name := DMName(spec.VMID)
	table := fmt.Sprintf("0 %d snapshot %s %s P %d", sectors, h.OriginLoop, h.COWLoop, chunkSectors)
	if _, err := r.Run(ctx, "dmsetup", "create", name, "--table", table); err != nil {
		if hasOutput(err, "Device or resource busy") || hasOutput(err, "already exists") {
			err = fmt.Errorf("%w: %w", err, errdefs.ErrAlreadyExists)
		}
		return fail("create snapshot "+name, err)
	}
	h.DMName, h.Device = name, DevicePath(spec.VMID)
	return h, nil
}

// attach runs `losetup --find --show [opts] FILE` and returns the loop
// device it printed.
func attach(ctx context.Context, r Runner, args ...string) (string, error) {
	argv := append([]string{"losetup", "--find", "--show"}, args...)
	out, err := r.Run(ctx, argv...)
	if err != nil {
		return "", err
	}
	dev := strings.TrimSpace(string(out))
	if !strings.HasPrefix(dev, "/dev/") || strings.ContainsAny(dev, " \n") {
		return "", fmt.Errorf("losetup printed %q, not a loop device", out)
	}
	return dev, nil
}

// sizeSectors asks for dev's size in 512-byte sectors.
func sizeSectors(ctx context.Context, r Runner, dev string) (int64, error) {
	out, err := r.Run(ctx, "blockdev", "--getsz", dev)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("blockdev printed %q, not a size in sectors", out)
	}
	return n, nil
}

// cleanupContext keeps ctx's values but not its cancellation, bounded by
// undoTimeout: undoing must not be skipped because the request that
// failed was cancelled.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
}
