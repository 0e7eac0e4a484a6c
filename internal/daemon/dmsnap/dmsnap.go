package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"banger/internal/errdefs"
	"banger/internal/system"
)

// Runner runs a host command given as argv (never a shell string) and
// returns its stdout; a failure is an error carrying the argv and the
// tool's output (a *system.CommandError). system.Runner satisfies it.
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

const (
	// namePrefix starts every device-mapper device banger makes.
	namePrefix = "banger-"
	// chunkSectors is the snapshot's chunk size: 8 sectors, 4 KiB.
	chunkSectors = 8
	// maxVMIDLen keeps banger-<vmid> well under device-mapper's 127-byte
	// name limit.
	maxVMIDLen = 64
)

// Spec says which snapshot to make.
type Spec struct {
	// VMID names every object: the device is banger-<VMID>. Letters,
	// digits, '.', '_' and '-'; at most 64 bytes.
	VMID string
	// Image is the VM's image: a raw ext4 file, attached read-only.
	Image string
	// COW is the VM's copy-on-write file, already made (see MakeCOW).
	COW string
}

// Handles names what Create made, for Cleanup and Remove. A zero field
// means that object does not exist (or was not found).
type Handles struct {
	VMID string `json:"vm_id"`
	// Image and COW are the backing files, absolute. Cleanup detaches a
	// loop only while it is still backed by its file; empty skips the check.
	Image string `json:"image,omitempty"`
	COW   string `json:"cow,omitempty"`
	// OriginLoop and COWLoop are the loop devices ("/dev/loop3").
	OriginLoop string `json:"origin_loop,omitempty"`
	COWLoop    string `json:"cow_loop,omitempty"`
	// DMName is the device-mapper name, banger-<vmid>; Device its node
	// (/dev/mapper/banger-<vmid>), the VM's disk.
	DMName string `json:"dm_name,omitempty"`
	Device string `json:"device,omitempty"`
}

// DMName is the device-mapper name of vmid's snapshot.
func DMName(vmid string) string { return namePrefix + vmid }

// DevicePath is the node of vmid's snapshot.
func DevicePath(vmid string) string { return "/dev/mapper/" + DMName(vmid) }

// validVMID refuses ids that cannot name a device-mapper device or would
// be read as something else by dmsetup.
func validVMID(vmid string) error {
	if vmid == "" || len(vmid) > maxVMIDLen || vmid[0] == '-' || vmid[0] == '.' {
		return fmt.Errorf("dmsnap: VM id %q: want 1 to %d letters, digits, '.', '_' or '-', not starting with '-' or '.': %w", vmid, maxVMIDLen, errdefs.ErrInvalidArgument)
	}
	for _, c := range vmid {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("dmsnap: VM id %q: character %q is not allowed: %w", vmid, c, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// absPath makes p absolute and, when p exists, resolves its symlinks, so
// it compares equal to the backing file losetup reports.
func absPath(p string) string {
	if p == "" {
		return ""
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	return abs
}

// goneMessages are what dmsetup and losetup print (with LC_ALL=C) when
// the object they were asked about does not exist: "Device banger-x not
// found", "remove ioctl on banger-x failed: No such device or address",
// "Device does not exist.", "/dev/loop9: failed to use device: No such
// device", "detach failed: No such device or address".
var goneMessages = []string{"not found", "No such device", "does not exist", "No such file or directory"}

// isGone reports whether err is a command failure saying its object
// is already gone.
func isGone(err error) bool {
	var ce *system.CommandError
	if !errors.As(err, &ce) || ce.ExitCode <= 0 {
		return false
	}
	out := ce.Stderr + "\n" + ce.Stdout
	for _, m := range goneMessages {
		if strings.Contains(out, m) {
			return true
		}
	}
	return false
}

// hasOutput reports whether err is a command failure whose output
// contains msg.
func hasOutput(err error, msg string) bool {
	var ce *system.CommandError
	return errors.As(err, &ce) && strings.Contains(ce.Stderr+"\n"+ce.Stdout, msg)
}
