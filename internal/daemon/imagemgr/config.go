package imagemgr

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"banger/internal/errdefs"
)

// MaxConfigSize bounds the OCI image config ConfigFromOCI reads. Real
// ones are a few KiB (tens with a long history).
const MaxConfigSize = 4 << 20

// ImageConfig is what banger keeps of an image's OCI config: how to run
// its entrypoint and what it says about itself.
type ImageConfig struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"working_dir,omitempty"`
	User         string            `json:"user,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// ociConfig is the part of an OCI (or Docker) image config blob banger
// reads; the other fields (history, rootfs, ...) are ignored.
type ociConfig struct {
	Config *struct {
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		Env          []string            `json:"Env"`
		WorkingDir   string              `json:"WorkingDir"`
		User         string              `json:"User"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Labels       map[string]string   `json:"Labels"`
	} `json:"config"`
}

// ConfigFromOCI reads an OCI or Docker image config blob
// ({"config":{"Entrypoint":…,"Cmd":…,"Env":…,…}}). A blob over
// MaxConfigSize, one that is not a single JSON object, a field of the
// wrong type, an environment entry without '=', or a string holding a NUL
// byte (which could never reach execve) is refused with an error wrapping
// errdefs.ErrInvalidArgument. A blob without "config" gives an empty
// ImageConfig. ExposedPorts comes back sorted.
func ConfigFromOCI(raw []byte) (ImageConfig, error) {
	if len(raw) > MaxConfigSize {
		return ImageConfig{}, fmt.Errorf("image config is %d bytes, the limit is %d: %w", len(raw), MaxConfigSize, errdefs.ErrInvalidArgument)
	}
	if !bytes.HasPrefix(bytes.TrimLeft(raw, " \t\r\n"), []byte("{")) {
		return ImageConfig{}, fmt.Errorf("parse image config: not a JSON object: %w", errdefs.ErrInvalidArgument)
	}
	var oc ociConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&oc); err != nil {
		return ImageConfig{}, fmt.Errorf("parse image config: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if _, err := dec.Token(); err != io.EOF {
		return ImageConfig{}, fmt.Errorf("parse image config: data after the JSON object: %w", errdefs.ErrInvalidArgument)
	}
	var c ImageConfig
	if oc.Config == nil {
		return c, nil
	}
	in := oc.Config
	c = ImageConfig{
		Entrypoint: in.Entrypoint,
		Cmd:        in.Cmd,
		Env:        in.Env,
		WorkingDir: in.WorkingDir,
		User:       in.User,
		Labels:     in.Labels,
	}
	for p := range in.ExposedPorts {
		c.ExposedPorts = append(c.ExposedPorts, p)
	}
	sort.Strings(c.ExposedPorts)
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return ImageConfig{}, fmt.Errorf("image config: environment entry %q is not KEY=VALUE: %w", e, errdefs.ErrInvalidArgument)
		}
	}
	for _, field := range [][]string{c.Entrypoint, c.Cmd, c.Env, {c.WorkingDir, c.User}} {
		for _, s := range field {
			if strings.IndexByte(s, 0) >= 0 {
				return ImageConfig{}, fmt.Errorf("image config: %q holds a NUL byte: %w", s, errdefs.ErrInvalidArgument)
			}
		}
	}
	return c, nil
}
