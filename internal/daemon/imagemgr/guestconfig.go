package imagemgr

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// GuestConfigPath is where the image's config lives inside the image, for
// the guest init: it starts Entrypoint+Cmd with Env, WorkingDir and User
// when the VM asks for the image's own entrypoint.
const GuestConfigPath = "/.banger/image.json"

// guestConfig is the file's format; the guest init reads the same fields.
type guestConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// WriteGuestConfig writes cfg to /.banger/image.json under root (0644
// root:root), replacing whatever the image had there. Call it after
// PrepareGuestRoot, which makes /.banger a real directory of ours.
func WriteGuestConfig(root string, cfg ImageConfig) error {
	data, err := json.MarshalIndent(guestConfig{
		Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, Env: cfg.Env,
		WorkingDir: cfg.WorkingDir, User: cfg.User,
	}, "", "  ")
	if err != nil {
		return err
	}
	t, err := openTree(root)
	if err != nil {
		return err
	}
	defer t.close()
	d, base, err := parentOf(t, strings.TrimPrefix(GuestConfigPath, "/"))
	if err != nil {
		return err
	}
	defer d.close()
	if err := removeAllAt(d.fd, base); err != nil {
		return err
	}
	fd, err := createRoot(d.fd, base, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", GuestConfigPath, err)
	}
	f := os.NewFile(uintptr(fd), GuestConfigPath)
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
