package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

func (a *app) imageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "Pull, import, register, list and remove images",
	}
	cmd.AddCommand(a.imagePullCommand(), a.imageImportCommand(), a.imageRegisterCommand(), a.imagePromoteCommand(),
		a.imageLsCommand(), a.imageShowCommand(), a.imageRmCommand())
	return cmd
}

// withClient runs fn with a client to the daemon.
func (a *app) withClient(ctx context.Context, fn func(c *rpc.Client) error) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

func (a *app) imagePullCommand() *cobra.Command {
	var nameFlag, attach string
	var cancelOnInterrupt bool
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an OCI image (by tag or digest) and make it a bootable root filesystem",
		Long: `Pull an OCI image from a registry, by tag or digest (linux/amd64 from a
multi-platform index), and make it an ext4 root filesystem banger boots.
Credentials come from your docker config (~/.docker/config.json or
$DOCKER_CONFIG, credential helpers included). Registries on loopback are
reached over plain HTTP; others need HTTPS unless listed in
insecure_registries. Ctrl-C stops following the pull, not the pull itself,
unless --cancel-on-interrupt.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if attach != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withClient(ctx, func(c *rpc.Client) error {
				opID := attach
				if opID == "" {
					auth, err := registryAuth(args[0])
					if err != nil {
						return err
					}
					var started rpc.OpStarted
					if err := c.Call(ctx, rpc.MethodImagePull, rpc.ImagePullParams{Ref: args[0], Name: nameFlag, Auth: auth}, &started); err != nil {
						return err
					}
					opID = started.OpID
					if !a.jsonOutput() && started.Image != nil {
						fmt.Fprintf(a.stderr, "Pulling %s as image %s (operation %s)\n", args[0], started.Image.Name, opID)
					}
				}
				final, err := a.followOp(ctx, c, opID, cancelOnInterrupt, "banger image pull --attach "+opID)
				if err != nil {
					return err
				}
				return a.printOpImage(final)
			})
		},
	}
	cmd.Flags().StringVar(&nameFlag, "name", "", "image name (default: from REF, e.g. debian:bookworm)")
	cmd.Flags().StringVar(&attach, "attach", "", "follow the pull operation OP that is already running instead of starting one")
	cmd.Flags().BoolVar(&cancelOnInterrupt, "cancel-on-interrupt", false, "cancel the pull in the daemon on Ctrl-C")
	return cmd
}

// printOpImage prints the image a finished image op made.
func (a *app) printOpImage(final rpc.Op) error {
	var im rpc.Image
	if len(final.Result) > 0 {
		if err := json.Unmarshal(final.Result, &im); err != nil {
			return fmt.Errorf("decode the operation's result: %w", err)
		}
	}
	if a.jsonOutput() {
		return nil // the JSON progress stream ends with the final op, result included
	}
	fmt.Fprintf(a.stdout, "Image %s ready: %s, %s\n", im.Name, im.ID, humanBytes(im.SizeBytes))
	return nil
}

// registryAuth resolves the user's credential for ref's registry from
// their docker config, as docker would. Anonymous gives nil.
func registryAuth(ref string) (*rpc.RegistryAuth, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %v", ref, err)
	}
	auth, err := authn.DefaultKeychain.Resolve(r.Context())
	if err != nil {
		return nil, fmt.Errorf("read registry credentials for %s: %w", r.Context().RegistryStr(), err)
	}
	if auth == authn.Anonymous {
		return nil, nil
	}
	cfg, err := auth.Authorization()
	if err != nil {
		return nil, fmt.Errorf("registry credentials for %s: %w", r.Context().RegistryStr(), err)
	}
	ra := rpc.RegistryAuth{Username: cfg.Username, Password: cfg.Password, Auth: cfg.Auth, IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken}
	if ra == (rpc.RegistryAuth{}) {
		return nil, nil
	}
	return &ra, nil
}

func absPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	return abs, nil
}

func (a *app) imageImportCommand() *cobra.Command {
	var nameFlag string
	var cancelOnInterrupt bool
	cmd := &cobra.Command{
		Use:   "import FILE|DIR --name N",
		Short: "Make an image from a rootfs tarball (plain, gzip or zstd) or a directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			path, err := absPath(args[0])
			if err != nil {
				return err
			}
			return a.withClient(ctx, func(c *rpc.Client) error {
				var started rpc.OpStarted
				if err := c.Call(ctx, rpc.MethodImageImport, rpc.ImageImportParams{Path: path, Name: nameFlag}, &started); err != nil {
					return err
				}
				final, err := a.followOp(ctx, c, started.OpID, cancelOnInterrupt, "banger op watch "+started.OpID)
				if err != nil {
					return err
				}
				return a.printOpImage(final)
			})
		},
	}
	cmd.Flags().StringVar(&nameFlag, "name", "", "image name (required)")
	cmd.MarkFlagRequired("name")
	cmd.Flags().BoolVar(&cancelOnInterrupt, "cancel-on-interrupt", false, "cancel the import in the daemon on Ctrl-C")
	return cmd
}

func (a *app) imageRegisterCommand() *cobra.Command {
	var nameFlag, rootfs, kernel string
	cmd := &cobra.Command{
		Use:   "register --rootfs EXT4 --name N",
		Short: "Make an image from an existing ext4 root filesystem (copied; the guest init is injected)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			path, err := absPath(rootfs)
			if err != nil {
				return err
			}
			return a.withClient(ctx, func(c *rpc.Client) error {
				var started rpc.OpStarted
				if err := c.Call(ctx, rpc.MethodImageRegister, rpc.ImageRegisterParams{Rootfs: path, Name: nameFlag, Kernel: kernel}, &started); err != nil {
					return err
				}
				final, err := a.followOp(ctx, c, started.OpID, false, "banger op watch "+started.OpID)
				if err != nil {
					return err
				}
				return a.printOpImage(final)
			})
		},
	}
	cmd.Flags().StringVar(&rootfs, "rootfs", "", "the ext4 file (required)")
	cmd.Flags().StringVar(&nameFlag, "name", "", "image name (required)")
	cmd.Flags().StringVar(&kernel, "kernel", "", "kernel VMs of this image boot by default")
	cmd.MarkFlagRequired("rootfs")
	cmd.MarkFlagRequired("name")
	return cmd
}

func (a *app) imageLsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				var res rpc.ImageListResult
				if err := c.Call(cmd.Context(), rpc.MethodImageList, nil, &res); err != nil {
					return err
				}
				if a.jsonOutput() {
					return printJSON(a.stdout, res.Images)
				}
				t := newTable(a.stdout, "NAME", "ID", "STATE", "SOURCE", "SIZE", "CREATED")
				now := time.Now()
				for _, im := range res.Images {
					t.row(im.Name, short(im.ID), im.State, im.Source+" "+im.SourceRef, humanBytes(im.SizeBytes), ago(im.CreatedAt, now))
				}
				return t.flush()
			})
		},
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func (a *app) imageShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show one image",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				var im rpc.Image
				if err := c.Call(cmd.Context(), rpc.MethodImageShow, rpc.NameRef{Ref: args[0]}, &im); err != nil {
					return err
				}
				if a.jsonOutput() {
					return printJSON(a.stdout, im)
				}
				kv := [][2]string{
					{"Name", im.Name}, {"ID", im.ID}, {"State", im.State + " " + im.StateReason},
					{"Source", im.Source + " " + im.SourceRef}, {"Digest", dash(im.Digest)},
					{"Size", humanBytes(im.SizeBytes)}, {"Path", dash(im.Path)},
					{"Kernel", dash(im.DefaultKernel)},
					{"Entrypoint", dash(quoteArgs(im.Config.Entrypoint))}, {"Cmd", dash(quoteArgs(im.Config.Cmd))},
					{"Workdir", dash(im.Config.WorkingDir)}, {"User", dash(im.Config.User)},
					{"Env", dash(strings.Join(im.Config.Env, " "))},
					{"Used by", dash(strings.Join(im.UsedBy, ", "))},
					{"Created", im.CreatedAt.Local().Format(time.RFC3339)},
				}
				for _, p := range kv {
					fmt.Fprintf(a.stdout, "%-11s %s\n", p[0]+":", strings.TrimSpace(p[1]))
				}
				return nil
			})
		},
	}
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, s := range args {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, " ")
}

func (a *app) imageRmCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove images (refused while a VM uses one)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				for _, ref := range args {
					if err := c.Call(cmd.Context(), rpc.MethodImageRemove, rpc.NameRef{Ref: ref}, nil); err != nil {
						return err
					}
					if !a.jsonOutput() {
						fmt.Fprintf(a.stdout, "Removed image %s\n", ref)
					}
				}
				return nil
			})
		},
	}
}

func (a *app) imagePromoteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "promote VM NAME",
		Short: "Make a stopped VM's disk an image (set up once, create many VMs from it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withClient(ctx, func(c *rpc.Client) error {
				var started rpc.OpStarted
				if err := c.Call(ctx, rpc.MethodImagePromote, rpc.ImagePromoteParams{VM: args[0], Name: args[1]}, &started); err != nil {
					return err
				}
				final, err := a.followOp(ctx, c, started.OpID, false, "banger op watch "+started.OpID)
				if err != nil {
					return err
				}
				return a.printOpImage(final)
			})
		},
	}
}
