package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ImageState is where an image is in its making.
type ImageState string

const (
	ImagePending ImageState = "pending" // being pulled, imported or promoted
	ImageReady   ImageState = "ready"   // rootfs.ext4 is complete; VMs may use it
	ImageFailed  ImageState = "failed"  // the making failed; StateReason says why
)

// ImageSource is how an image came to be.
type ImageSource string

const (
	SourcePull     ImageSource = "pull"     // SourceRef: the OCI reference
	SourceImport   ImageSource = "import"   // SourceRef: the tarball or directory
	SourceRegister ImageSource = "register" // SourceRef: the existing ext4 file
	SourcePromote  ImageSource = "promote"  // SourceRef: the VM whose disk it was
)

// ImageConfig is what banger keeps of the OCI image config: what the guest
// init runs when asked to start the image's own entrypoint. Field names
// follow the OCI config.
type ImageConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
	User       string   `json:"User,omitempty"`
}

// Image is a read-only root filesystem, images/ID/rootfs.ext4.
type Image struct {
	ID              string
	Name            string
	State           ImageState
	StateReason     string
	SourceKind      ImageSource
	SourceRef       string
	ManifestDigest  string // "sha256:…" for pulled images, else ""
	SizeBytes       int64
	Config          ImageConfig
	DefaultKernelID string // "" for none
	ParentImageID   string // promoted images: the image the VM was made from
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

var images = table[Image]{
	kind: "image",
	name: "images",
	cols: `id, name, state, state_reason, source_kind, source_ref, manifest_digest,
		size_bytes, config_json, default_kernel_id, parent_image_id, created_at, updated_at`,
	scan: func(r rowScanner) (Image, error) {
		var im Image
		err := r.Scan(&im.ID, &im.Name, &im.State, &im.StateReason, &im.SourceKind, &im.SourceRef,
			&im.ManifestDigest, &im.SizeBytes, jsonScan{&im.Config},
			stringScan{&im.DefaultKernelID}, stringScan{&im.ParentImageID},
			timeScan{&im.CreatedAt}, timeScan{&im.UpdatedAt})
		return im, err
	},
	key: func(im Image) (string, string) { return im.ID, im.Name },
}

// CreateImage records im, giving it a new ID if it has none, State pending
// if unset, and fresh CreatedAt and UpdatedAt, and returns the stored
// record. A taken name is ErrAlreadyExists; a missing default kernel or
// parent image is ErrNotFound naming it.
func (q *queries) CreateImage(ctx context.Context, im Image) (Image, error) {
	if im.ID == "" {
		im.ID = NewID()
	}
	if im.State == "" {
		im.State = ImagePending
	}
	cfg, err := json.Marshal(im.Config)
	if err != nil {
		return Image{}, fmt.Errorf("create image %q: %w", im.Name, err)
	}
	now := encodeTime(q.now())
	got, err := images.scan(q.w.QueryRowContext(ctx, `
		INSERT INTO images (id, name, state, state_reason, source_kind, source_ref, manifest_digest,
			size_bytes, config_json, default_kernel_id, parent_image_id, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		RETURNING `+images.cols,
		im.ID, im.Name, im.State, im.StateReason, im.SourceKind, im.SourceRef, im.ManifestDigest,
		im.SizeBytes, string(cfg), nullString(im.DefaultKernelID), nullString(im.ParentImageID), now, now))
	if err != nil {
		return Image{}, q.imageWriteError(ctx, "create", im, err)
	}
	return got, nil
}

// GetImage returns the image with ID id.
func (q *queries) GetImage(ctx context.Context, id string) (Image, error) {
	return images.get(ctx, q.r, "id", id)
}

// GetImageByName returns the image named name.
func (q *queries) GetImageByName(ctx context.Context, name string) (Image, error) {
	return images.get(ctx, q.r, "name", name)
}

// ResolveImage finds an image by exact name, exact ID, or unique ID prefix.
func (q *queries) ResolveImage(ctx context.Context, ref string) (Image, error) {
	return images.resolve(ctx, q.r, ref)
}

// ListImages returns every image, oldest first.
func (q *queries) ListImages(ctx context.Context) ([]Image, error) {
	return images.list(ctx, q.r, "")
}

// UpdateImage writes im's mutable fields (Name, State, StateReason,
// ManifestDigest, SizeBytes, Config, DefaultKernelID) to the image with
// ID im.ID, bumps UpdatedAt, and returns the stored record. The source and
// parent are fixed at creation.
func (q *queries) UpdateImage(ctx context.Context, im Image) (Image, error) {
	cfg, err := json.Marshal(im.Config)
	if err != nil {
		return Image{}, fmt.Errorf("update image %q: %w", im.Name, err)
	}
	got, err := images.scan(q.w.QueryRowContext(ctx, `
		UPDATE images SET name = ?, state = ?, state_reason = ?, manifest_digest = ?,
			size_bytes = ?, config_json = ?, default_kernel_id = ?, updated_at = ?
		WHERE id = ?
		RETURNING `+images.cols,
		im.Name, im.State, im.StateReason, im.ManifestDigest,
		im.SizeBytes, string(cfg), nullString(im.DefaultKernelID), encodeTime(q.now()), im.ID))
	if err != nil {
		return Image{}, q.imageWriteError(ctx, "update", im, err)
	}
	return got, nil
}

// SetImageState sets the state of image id and why, and returns the
// stored record.
func (q *queries) SetImageState(ctx context.Context, id string, state ImageState, reason string) (Image, error) {
	got, err := images.scan(q.w.QueryRowContext(ctx, `
		UPDATE images SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?
		RETURNING `+images.cols,
		state, reason, encodeTime(q.now()), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, fmt.Errorf("image %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Image{}, invalidValue(fmt.Sprintf("set state of image %q", id), err)
	}
	return got, nil
}

// DeleteImage removes the image with ID id. An image a VM uses is ErrBusy,
// naming the VMs. Images promoted from it keep existing (they have their
// own disks) and lose only the ParentImageID link.
func (q *queries) DeleteImage(ctx context.Context, id string) error {
	res, err := q.w.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id)
	if isForeignKeyViolation(err) {
		return q.imageBusy(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("delete image %q: %w", id, err)
	}
	return mustAffect(res, "image", id)
}

// imageBusy explains which VMs hold image id.
func (q *queries) imageBusy(ctx context.Context, id string) error {
	im, err := q.GetImage(ctx, id)
	if err != nil {
		return err
	}
	vs, err := vms.list(ctx, q.r, "image_id = ?", id)
	if err != nil {
		return err
	}
	names := make([]string, len(vs))
	for i, vm := range vs {
		names[i] = fmt.Sprintf("%q", vm.Name)
	}
	return errorf(ErrBusy, "image %q is used by %s %s: delete %s first",
		im.Name, plural("vm", len(vs)), strings.Join(names, ", "), pronoun(len(vs)))
}

// imageWriteError maps the failure of an insert or update of im.
func (q *queries) imageWriteError(ctx context.Context, verb string, im Image, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("image %q: %w", im.ID, ErrNotFound)
	}
	if col, ok := uniqueViolation(err); ok {
		if col == "images.name" {
			return fmt.Errorf("image name %q: %w", im.Name, ErrAlreadyExists)
		}
		return fmt.Errorf("image id %q: %w", im.ID, ErrAlreadyExists)
	}
	if isForeignKeyViolation(err) {
		if im.DefaultKernelID != "" {
			if _, kerr := q.GetKernel(ctx, im.DefaultKernelID); kerr != nil {
				return fmt.Errorf("%s image %q: default %w", verb, im.Name, kerr)
			}
		}
		if im.ParentImageID != "" {
			if _, perr := q.GetImage(ctx, im.ParentImageID); perr != nil {
				return fmt.Errorf("%s image %q: parent %w", verb, im.Name, perr)
			}
		}
	}
	return invalidValue(fmt.Sprintf("%s image %q", verb, im.Name), err)
}

// pronoun is "it" or "them".
func pronoun(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}
