// Package vmdisk makes a VM's disk file from its image when the disk is a
// file of its own: a reflink clone (FICLONE) where the file system can
// share blocks between files (XFS with reflink, btrfs), else a sparse copy
// that copies only the image's data extents. It also grows a disk file
// and the ext4 inside it. The third strategy, a device-mapper snapshot,
// lives in package dmsnap; Strategy names all three so the daemon and
// doctor speak of them alike.
//
// Every file this package creates is new (O_EXCL), mode 0600, and removed
// again when making it fails.
package vmdisk

import "context"

// Strategy is how a VM's copy-on-write disk is made.
type Strategy string

const (
	// StrategyDMSnap: a device-mapper snapshot over loop devices (package dmsnap).
	StrategyDMSnap Strategy = "dmsnap"
	// StrategyReflink: a FICLONE clone sharing the image's blocks; instant.
	StrategyReflink Strategy = "reflink"
	// StrategyCopy: a sparse copy of the image's data; time and space grow
	// with the image's data, not its size.
	StrategyCopy Strategy = "copy"
)

// Runner runs a host command given as argv (never a shell string) and
// returns its stdout; a failure is an error carrying the argv and the
// tool's output (a *system.CommandError). system.Runner satisfies it.
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}
