package guestinit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ImageConfigPath is where the daemon writes an image's ImageConfig when
// it finalizes the image.
const ImageConfigPath = "/.banger/image.json"

// ImageConfig is the process part of an OCI image's config, as the guest
// needs it. Every field may be empty.
type ImageConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"` // KEY=VALUE
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"` // as BANGER_USER: name or uid, optionally ":group"
}

// ReadImageConfig reads an ImageConfig file.
func ReadImageConfig(path string) (ImageConfig, error) {
	var ic ImageConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return ic, err
	}
	if err := json.Unmarshal(data, &ic); err != nil {
		return ic, fmt.Errorf("%s: %w", path, err)
	}
	return ic, nil
}

// startEntrypoint starts the image's entrypoint+cmd as ic says, in its own
// session, stdin on /dev/null, stdout and stderr on the console, and logs
// its exit. It does not wait; the VM stays up whatever the entrypoint does.
func startEntrypoint(ic ImageConfig, baseEnv []string, r *Reaper, log *slog.Logger) error {
	argv := append(append([]string(nil), ic.Entrypoint...), ic.Cmd...)
	if len(argv) == 0 {
		return errors.New("the image has neither entrypoint nor cmd")
	}
	passwd, _ := os.ReadFile("/etc/passwd")
	group, _ := os.ReadFile("/etc/group")
	u, err := resolveUser(ic.User, passwd, group)
	if err != nil {
		return err
	}
	env := mergeEnv(baseEnv, []string{"HOME=" + u.Home}, ic.Env)
	dir := ic.WorkingDir
	if dir == "" {
		dir = "/"
	}
	path, err := lookPathIn(argv[0], envGet(env, "PATH"), dir)
	if err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	out, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		out = os.Stderr
	} else {
		defer out.Close()
	}
	spec := spawnSpec{
		path: path, argv: argv, env: env, dir: dir,
		files: [3]*os.File{null, out, out}, newSession: true,
	}
	if ic.User != "" {
		spec.cred = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
	}
	p, err := spawn(r, spec)
	if err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	log.Info("entrypoint started", "pid", p.pid, "argv", argv)
	go func() {
		ws, ok := p.wait()
		if !ok {
			log.Warn("entrypoint's status was lost", "pid", p.pid)
			return
		}
		level := slog.LevelInfo
		if !ws.Exited() || ws.ExitStatus() != 0 {
			level = slog.LevelWarn
		}
		log.Log(context.Background(), level, "entrypoint ended; the VM stays up", "pid", p.pid, "status", describeStatus(ws))
	}()
	return nil
}
