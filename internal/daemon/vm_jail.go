package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"banger/internal/daemon/fcproc"
	"banger/internal/errdefs"
)

// firecrackerConfig is the part of a VM's fcproc.Config that comes from
// banger's config: the binary and, when jailer_binary is set, the jailer.
// The jailer needs Firecracker's absolute path (its --exec-file), so the
// binary is looked up in PATH then.
func (m *vmManager) firecrackerConfig(id string) (fcproc.Config, error) {
	cfg := fcproc.Config{ID: id, Binary: m.config.FirecrackerBinary, APISocket: fcproc.JailAPISocket}
	if m.config.JailerBinary == "" {
		return cfg, nil
	}
	bin, err := exec.LookPath(cfg.Binary)
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	if err != nil {
		return cfg, fmt.Errorf("firecracker %s (for the jailer's --exec-file): %w: %w", cfg.Binary, err, errdefs.ErrUnavailable)
	}
	cfg.Binary = bin
	cfg.Jailer = &fcproc.Jailer{
		Binary:        m.config.JailerBinary,
		UID:           m.config.JailerUID,
		GID:           m.config.JailerGID,
		ChrootBaseDir: m.config.JailBase(),
	}
	return cfg, nil
}

// Names of a VM's files inside its jail (Firecracker sees "/"+name).
const (
	jailKernel = "vmlinux"
	jailInitrd = "initrd"
	jailDisk   = "rootfs"
	jailLog    = "vmm.log"
)

// prepareJail makes the VM's jail (fcproc.PrepareJail): its disk and VMM
// log hard-linked (what the VM writes stays in the VM's directory) and
// handed to the jailer's uid and gid, its kernel and initrd linked or
// copied. It returns the paths Firecracker sees.
func prepareJail(cfg fcproc.Config, spec bootSpec) (kernel, initrd, disk, vmmLog string, err error) {
	// Firecracker creates its log; inside the jail it must already be
	// there to be the VM directory's file too.
	f, err := os.OpenFile(spec.VMMLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return "", "", "", "", err
	}
	f.Close()
	files := []fcproc.JailFile{
		{HostPath: spec.Kernel, Name: jailKernel},
		{HostPath: spec.Disk, Name: jailDisk, Writable: true},
		{HostPath: spec.VMMLog, Name: jailLog, Writable: true},
	}
	if spec.Initrd != "" {
		files = append(files, fcproc.JailFile{HostPath: spec.Initrd, Name: jailInitrd})
	}
	paths, err := fcproc.PrepareJail(cfg, files)
	if err != nil {
		return "", "", "", "", fmt.Errorf("prepare the jail: %w", err)
	}
	if spec.Initrd != "" {
		initrd = paths[3]
	}
	return paths[0], initrd, paths[1], paths[2], nil
}

// removeJail removes a jailed VM's jail (nothing without a jailer).
func removeJail(cfg fcproc.Config) error {
	if cfg.Jailer == nil {
		return nil
	}
	return fcproc.RemoveJail(cfg)
}

// jailPlace is where a VM's jail is: <Base>/<Exec>/<id> (the jailer's
// chroot base and the base name of Firecracker's binary).
type jailPlace struct {
	Base string `json:"base"`
	Exec string `json:"exec"`
}

// jailConfig is the fcproc.Config that names the jail at p.
func (p *jailPlace) jailConfig(id string) fcproc.Config {
	return fcproc.Config{ID: id, Binary: "/" + p.Exec, APISocket: fcproc.JailAPISocket,
		Jailer: &fcproc.Jailer{ChrootBaseDir: p.Base}}
}

// recordedJail is the jail place VM id's handles record (cached, or in
// its handles.json), or nil.
func (m *vmManager) recordedJail(id string) *jailPlace {
	if h, ok := m.handles.get(id); ok && h.Jail != nil {
		return h.Jail
	}
	var h vmHandles
	if data, err := os.ReadFile(m.layout.VMHandles(id)); err == nil && json.Unmarshal(data, &h) == nil {
		return h.Jail
	}
	return nil
}

// removeVMJail removes VM id's jail, if any: where its handles say it was
// made, else where the current config would make it. rm's sweep for a
// jail whose Firecracker this daemon did not see exit (one left by a
// daemon that went away, or made under other jailer settings).
func (m *vmManager) removeVMJail(id string) error {
	if p := m.recordedJail(id); p != nil {
		if err := removeJail(p.jailConfig(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if m.config.JailerBinary == "" {
		return nil
	}
	cfg, err := m.firecrackerConfig(id)
	if errors.Is(err, errdefs.ErrUnavailable) {
		// Without the binary the jail's directory name is its configured
		// base name.
		cfg.Jailer = &fcproc.Jailer{Binary: m.config.JailerBinary, ChrootBaseDir: m.config.JailBase()}
		if !filepath.IsAbs(cfg.Binary) {
			cfg.Binary = "/" + filepath.Base(cfg.Binary)
		}
	} else if err != nil {
		return err
	}
	if err := removeJail(cfg); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
