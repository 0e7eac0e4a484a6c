package imagemgr

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"banger/internal/errdefs"
)

// debugfsType reads the inode type from `debugfs -R "stat PATH"` output.
var debugfsType = regexp.MustCompile(`Type: ([a-z ]+?)\s+Mode:`)

// InjectInitExt4 puts initBinary at GuestInitPath (root:root 0755) inside
// an existing ext4 image, for `image register`, without mounting it:
// debugfs -w edits the image file with libext2fs, so the image's contents
// never reach the host's kernel or file tree. /.banger is made a
// root:root 0755 directory (a non-directory there is removed first); an
// image whose /.banger is a symlink is refused with ErrInvalidArgument,
// as PrepareGuestRoot does. debugfs exits 0 even when a request fails, so
// the result is checked afterwards with `stat`. Both paths must be
// absolute; initBinary's may not hold spaces or quotes (debugfs parses
// its requests).
func InjectInitExt4(ctx context.Context, run Runner, image, initBinary string) error {
	if !filepath.IsAbs(image) || !filepath.IsAbs(initBinary) || strings.ContainsAny(initBinary, " \t\n\"'\\") {
		return fmt.Errorf("inject init: image %q and init %q must be absolute paths without spaces or quotes: %w",
			image, initBinary, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(initBinary)
	if err != nil {
		return fmt.Errorf("inject init: %w", err)
	}
	dirType, err := debugfsStat(ctx, run, image, "/.banger")
	if err != nil {
		return err
	}
	var script strings.Builder
	switch dirType {
	case "symlink":
		return refuse("inject init into %s: the image has /.banger as a symlink; banger needs that directory for its init", image)
	case "directory":
	case "":
		script.WriteString("mkdir /.banger\n")
	default:
		script.WriteString("rm /.banger\nmkdir /.banger\n")
	}
	// Modes are written whole (type bits included) by set_inode_field.
	script.WriteString(`sif /.banger mode 040755
sif /.banger uid 0
sif /.banger gid 0
cd /.banger
rm init
write ` + initBinary + ` init
sif init mode 0100755
sif init uid 0
sif init gid 0
`)
	cmds, err := os.CreateTemp(filepath.Dir(image), ".debugfs-*")
	if err != nil {
		return fmt.Errorf("inject init: %w", err)
	}
	defer os.Remove(cmds.Name())
	_, err = cmds.WriteString(script.String())
	if cerr := cmds.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_, err = run.Run(ctx, "debugfs", "-w", "-f", cmds.Name(), image)
	}
	if err != nil {
		return fmt.Errorf("inject init into %s: %w", image, err)
	}
	out, err := run.Run(ctx, "debugfs", "-R", "stat "+GuestInitPath, image)
	if err != nil {
		return fmt.Errorf("inject init into %s: %w", image, err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`Type: regular\s+Mode:\s+0755\s`),
		regexp.MustCompile(`User:\s+0\s+Group:\s+0\s`),
		regexp.MustCompile(`Size: ` + strconv.FormatInt(fi.Size(), 10) + `\s`),
	} {
		if !want.Match(out) {
			return fmt.Errorf("inject init into %s: debugfs did not leave a root:root 0755 %s of %d bytes (the image may be full or damaged): %w",
				image, GuestInitPath, fi.Size(), errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// debugfsStat returns the type debugfs reports for path in image ("" when
// there is nothing there).
func debugfsStat(ctx context.Context, run Runner, image, path string) (string, error) {
	out, err := run.Run(ctx, "debugfs", "-R", "stat "+path, image)
	if err != nil {
		return "", fmt.Errorf("inspect %s in %s: %w", path, image, err)
	}
	m := debugfsType.FindSubmatch(out)
	if m == nil {
		return "", nil
	}
	return string(m[1]), nil
}
