package imagemgr

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// Runner runs a host command given as argv (never a shell string) and
// returns its stdout; the error carries the argv and the tool's output.
// banger's system.Runner satisfies it.
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

// Sizes used to estimate an ext4 file system.
const (
	ext4Block     = 4096     // the unit TreeSize rounds to
	ext4InodeSize = 256      // bytes per inode (mke2fs.conf's inode_size)
	MinExt4Size   = 64 << 20 // the smallest image Ext4Size returns
	fastSymlink   = 59       // longest symlink target kept in the inode
)

// TreeSize measures a tree for Ext4Size: bytes is the space its content
// takes in 4 KiB blocks (regular files rounded up to whole blocks, or
// their allocated blocks if fewer, as for sparse files; directories at
// least one block; symlinks too long to live in the inode one block);
// inodes counts every entry, the root included. A file with several
// links is counted once. Symlinks are never followed.
func TreeSize(root string) (bytes int64, inodes int64, err error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, 0, err
	}
	bytes, inodes = entrySize(&st), 1
	seen := make(map[fileID]bool)
	err = walkAt(fd, "", func(_ int, _, _ string, st *unix.Stat_t) error {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
			if seen[idOf(st)] {
				return nil
			}
			seen[idOf(st)] = true
		}
		bytes += entrySize(st)
		inodes++
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("measure %s: %w", root, err)
	}
	return bytes, inodes, nil
}

func entrySize(st *unix.Stat_t) int64 {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return min(roundUp(st.Size, ext4Block), roundUp(st.Blocks*512, ext4Block))
	case unix.S_IFDIR:
		return max(roundUp(st.Size, ext4Block), ext4Block)
	case unix.S_IFLNK:
		if st.Size > fastSymlink {
			return ext4Block
		}
	}
	return 0
}

// headroomBytesPerInode is mke2fs's default inode_ratio: one inode for
// every 16 KiB of the headroom, as any ext4 of that size would have.
const headroomBytesPerInode = 16 << 10

// Ext4Inodes is the inode count to ask mkfs.ext4 for (-N) when the tree
// has inodes entries and headroomBytes are left for the guest: the
// tree's plus 20% and 1024, and one inode per 16 KiB of headroom. The
// headroom's share matters: without it a 1 GiB headroom came with about
// a thousand free inodes, and a guest could not check out a repository
// of a few thousand files. resize2fs keeps the ratio when a VM's disk
// grows (it adds block groups with as many inodes each).
func Ext4Inodes(inodes, headroomBytes int64) int64 {
	return max(inodes, 0) + max(inodes, 0)/5 + 1024 + max(headroomBytes, 0)/headroomBytesPerInode
}

// Ext4Size is the size of the ext4 image for a tree of contentBytes and
// inodes (from TreeSize), with headroomBytes free for the guest:
//
//	data    = contentBytes + 10%                (extent and directory blocks,
//	                                              block groups, reserved GDT)
//	inodes  = Ext4Inodes(inodes, headroomBytes)
//	          × 256 B                           (the inode tables)
//	journal = mke2fs's default for that size    (4 MiB … 1 GiB)
//	size    = data + inodes + journal + headroomBytes
//
// rounded up to a whole MiB, and at least MinExt4Size. Of the result,
// mke2fs reserves 5% for root by default, which a root guest can use.
func Ext4Size(contentBytes, inodes, headroomBytes int64) int64 {
	size := contentBytes + contentBytes/10 + Ext4Inodes(inodes, headroomBytes)*ext4InodeSize + max(headroomBytes, 0)
	// The journal depends on the final size, which includes the journal.
	j := journalSize(size)
	j = journalSize(size + j)
	return max(roundUp(size+j, 1<<20), MinExt4Size)
}

// journalSize is mke2fs's default journal size for a file system of size
// bytes in 4 KiB blocks (ext2fs_default_journal_size); with the 1 KiB
// blocks mke2fs picks for small file systems it is smaller still.
func journalSize(size int64) int64 {
	const mib, gib = 1 << 20, 1 << 30
	switch {
	case size < 128*mib:
		return 4 * mib
	case size < gib:
		return 16 * mib
	case size < 2*gib:
		return 32 * mib
	case size < 16*gib:
		return 64 * mib
	case size < 32*gib:
		return 128 * mib
	case size < 64*gib:
		return 256 * mib
	case size < 128*gib:
		return 512 * mib
	}
	return gib
}

func roundUp(n, unit int64) int64 { return (n + unit - 1) / unit * unit }

// BuildExt4 writes srcDir into a new ext4 image outFile of sizeBytes
// (rounded up to a KiB) with inodes inodes (Ext4Inodes), through
// `mkfs.ext4 -d` (no mount, no loop device), then makes it read-only
// (0444). outFile must not exist; it is created sparse and removed again
// if mkfs fails. Both paths must be absolute, so neither can be read as
// an option. The root directory is root:root; owners, modes, xattrs,
// links and device nodes below it come from srcDir.
func BuildExt4(ctx context.Context, run Runner, srcDir, outFile string, sizeBytes, inodes int64) error {
	if !filepath.IsAbs(srcDir) || !filepath.IsAbs(outFile) {
		return fmt.Errorf("build ext4: source %q and output %q must be absolute paths: %w", srcDir, outFile, errdefs.ErrInvalidArgument)
	}
	if sizeBytes <= 0 || inodes < 0 {
		return fmt.Errorf("build ext4: size %d or inode count %d out of range: %w", sizeBytes, inodes, errdefs.ErrInvalidArgument)
	}
	sizeK := roundUp(sizeBytes, 1024) / 1024
	f, err := os.OpenFile(outFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	err = f.Truncate(sizeK * 1024)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_, err = run.Run(ctx, "mkfs.ext4", "-q", "-F", "-t", "ext4",
			"-d", srcDir,
			"-N", strconv.FormatInt(inodes, 10),
			"-L", "banger",
			"-E", "root_owner=0:0",
			outFile, strconv.FormatInt(sizeK, 10)+"K")
	}
	if err == nil {
		err = os.Chmod(outFile, 0o444)
	}
	if err != nil {
		os.Remove(outFile)
		return fmt.Errorf("build ext4 image %s: %w", outFile, err)
	}
	return nil
}
