package workspace

import (
	"archive/tar"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/adler32"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"
)

// DeletionsRecord is the PAX extended header record (value "1") that
// marks an archive entry as the deletion list rather than a file: its
// content is the NUL-separated paths the receiver removes under DEST
// before it extracts the entries that follow. The guest init's untar
// built-in knows the same key (guestinit.DeletionsRecord). A PAX record
// cannot come from a file name, so no checkout's file can pose as it.
const DeletionsRecord = "BANGER.delete"

// deletionsName is the deletion entry's name, for tools that list it.
const deletionsName = ".banger-deletions"

// Pack writes to w a tar of the workspace: the files Inspect's selection
// names and the guest's .git (see the package doc), and returns the
// manifest of what the guest then holds. With prev (the manifest of the
// previous Pack into the same guest), only entries whose content or mode
// changed are written, preceded by a deletion entry for paths prev had and
// the checkout no longer has.
//
// Memory stays bounded whatever the file sizes: contents are streamed
// from disk and hashed on the way. A file whose stat (inode, size, mtime,
// ctime) matches prev is not read at all.
//
// Pack is PackWith with every option of this version's guest init on.
func Pack(ctx context.Context, g Git, repo *Repo, w io.Writer, prev *Manifest) (*Manifest, error) {
	return PackWith(ctx, g, repo, w, prev, PackOptions{GitPacks: true})
}

// PackOptions says which newer forms the receiving guest understands
// (GuestFeaturesArgv).
type PackOptions struct {
	// GitPacks: packs may go in transfer form (GitPackRecord).
	GitPacks bool
	// Zstd: the guest's untar reads a zstd-compressed stream (the pack
	// helper compresses it; Pack itself writes plain tar).
	Zstd bool
	// TarNoGit: the guest's tar built-in leaves out .git (export's tree,
	// GuestTreeArgv).
	TarNoGit bool
}

// PackWith is Pack for a guest that understands what opt says.
func PackWith(ctx context.Context, g Git, repo *Repo, w io.Writer, prev *Manifest, opt PackOptions) (*Manifest, error) {
	srcs, closeRoots, err := sources(ctx, g, repo)
	defer closeRoots()
	if err != nil {
		return nil, err
	}
	p := &packer{ctx: ctx, tw: tar.NewWriter(w), prev: prev, dirOK: map[string]fs.FileInfo{}, emitted: map[string]bool{}}
	m := &Manifest{Base: repo.Head, ObjectFormat: repo.ObjectFormat}
	var send []int // indexes into m.Entries
	var sendSrc []source
	for _, s := range srcs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, changed, ok, err := p.classify(s)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s.name, err)
		}
		if !ok {
			continue
		}
		m.Entries = append(m.Entries, e)
		if changed {
			send = append(send, len(m.Entries)-1)
			sendSrc = append(sendSrc, s)
		}
	}
	send, sendSrc = resendPacks(m, srcs, send, sendSrc)
	if opt.GitPacks && repo.IsGit && repo.ObjectFormat == "sha1" {
		p.blobs = map[[20]byte]*blobRef{}
	}
	var deleted []string
	if prev != nil {
		for _, e := range prev.Entries {
			if _, ok := m.Lookup(e.Path); !ok {
				deleted = append(deleted, e.Path)
			}
		}
	}
	if len(deleted) > 0 {
		if err := p.writeDeletions(deleted); err != nil {
			return nil, err
		}
	}
	// The work tree first, then the git directories: a pack may then
	// refer to work-tree files the guest already has (GitPackRecord).
	order := make([]int, len(send))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ga, gb := isGitPath(sendSrc[a].name), isGitPath(sendSrc[b].name)
		switch {
		case ga == gb:
			return 0
		case gb:
			return -1
		}
		return 1
	})
	planned := false
	for _, i := range order {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s, e := sendSrc[i], &m.Entries[send[i]]
		if !planned && isGitPath(s.name) {
			planned = true
			if err := p.planPacks(sendSrc); err != nil {
				return nil, err
			}
		}
		if err := p.write(s, e); err != nil {
			return nil, fmt.Errorf("%q: %w", s.name, err)
		}
	}
	if err := p.tw.Close(); err != nil {
		return nil, err
	}
	m.Stats = PackStats{Files: len(m.Entries), Sent: len(send), SentBytes: p.sentBytes, Deleted: len(deleted), Hashed: p.hashed,
		PacksRebuilt: p.packs.PacksRebuilt, BlobsRebuilt: p.packs.BlobsRebuilt}
	return m, nil
}

// sources lists what Pack may write, sorted by name.
func sources(ctx context.Context, g Git, repo *Repo) ([]source, func(), error) {
	var roots []*os.Root
	closeAll := func() {
		for _, r := range roots {
			r.Close()
		}
	}
	work, err := os.OpenRoot(repo.Root)
	if err != nil {
		return nil, closeAll, err
	}
	roots = append(roots, work)
	var srcs []source
	if !repo.IsGit {
		files, err := plainFiles(repo.Root)
		if err != nil {
			return nil, closeAll, err
		}
		for _, f := range files {
			srcs = append(srcs, source{name: f, root: work, rel: f, dirs: true})
		}
		return srcs, closeAll, nil
	}
	files, err := workFiles(ctx, g, repo.Root, "", &repo.Notes)
	if err != nil {
		return nil, closeAll, err
	}
	for _, f := range files {
		if f == ".git" || strings.HasPrefix(f, ".git/") {
			continue
		}
		if d, ok := strings.CutSuffix(f, "/"); ok {
			srcs = append(srcs, source{name: d, root: work, rel: d, dirs: true, dir: true})
			continue
		}
		if path.Base(f) == ".git" {
			// An initialised submodule's git: a "gitdir:" file is copied
			// as is; a directory is copied like the top one.
			if fi, err := work.Lstat(f); err == nil && fi.IsDir() {
				dir := repo.Root + "/" + f
				sub, err := gitFiles(ctx, g, dir, dir, f+"/", false, "")
				if err != nil {
					return nil, closeAll, err
				}
				srcs = append(srcs, sub...)
				continue
			}
		}
		srcs = append(srcs, source{name: f, root: work, rel: f, dirs: true})
	}
	gits, err := gitFiles(ctx, g, repo.GitDir, repo.CommonDir, ".git/", true, repo.Root)
	if err != nil {
		return nil, closeAll, err
	}
	for _, s := range gits {
		if s.root != nil && s.root != work {
			roots = append(roots, s.root)
		}
	}
	srcs = append(srcs, gits...)
	slices.SortFunc(srcs, func(a, b source) int { return strings.Compare(a.name, b.name) })
	srcs = slices.CompactFunc(srcs, func(a, b source) bool { return a.name == b.name })
	return srcs, closeAll, nil
}

type packer struct {
	ctx       context.Context
	tw        *tar.Writer
	prev      *Manifest
	dirOK     map[string]fs.FileInfo // work tree parents: nil when not a real directory
	emitted   map[string]bool        // directories already in the stream
	sentBytes int64
	hashed    int64
	// blobs are the work-tree files sent so far by git blob name (nil:
	// not a SHA-1 repository); plans the packs sent in transfer form.
	blobs map[[20]byte]*blobRef
	plans map[string]*packPlan
	packs PackStats
}

// classify stats s and says whether it must be sent; ok is false when it
// is to be left out (gone from the work tree, not a file or symlink, or
// below something that is not a directory).
func (p *packer) classify(s source) (e Entry, changed, ok bool, err error) {
	e.Path = s.name
	old, had := p.prev.Lookup(s.name)
	if s.root == nil {
		e.Mode, e.Size, e.SHA256 = 0o644, int64(len(s.data)), sum(s.data)
		return e, !had || old.SHA256 != e.SHA256 || old.Mode != e.Mode, true, nil
	}
	if s.dirs {
		for _, d := range parents(s.rel) {
			fi, seen := p.dirOK[d]
			if !seen {
				fi, err = s.root.Lstat(d)
				if err != nil || !fi.IsDir() {
					fi = nil
				}
				p.dirOK[d] = fi
			}
			if fi == nil {
				return e, false, false, nil
			}
		}
	}
	fi, err := s.root.Lstat(s.rel)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return e, false, false, nil // deleted in the work tree
	}
	if err != nil {
		return e, false, false, err
	}
	e.Stat = statKey(fi)
	switch {
	case s.dir && fi.IsDir():
		e.Mode = fs.ModeDir | fi.Mode().Perm()
		return e, !had || old.Mode != e.Mode, true, nil
	case fi.Mode().IsRegular():
		e.Mode, e.Size = fi.Mode().Perm(), fi.Size()
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := s.root.Readlink(s.rel)
		if err != nil {
			return e, false, false, err
		}
		e.Mode, e.Size, e.SHA256 = fs.ModeSymlink|0o777, int64(len(target)), sum([]byte(target))
		return e, !had || old.SHA256 != e.SHA256 || old.Mode != e.Mode, true, nil
	default:
		return e, false, false, nil // a directory where a file was, a FIFO, a socket
	}
	if !had {
		return e, true, true, nil // hashed while sent
	}
	if old.Stat == e.Stat && old.Size == e.Size && old.Mode == e.Mode {
		e.SHA256 = old.SHA256
		return e, false, true, nil
	}
	h, n, err := hashFile(s.root, s.rel)
	if err != nil {
		return e, false, false, err
	}
	p.hashed += n
	e.SHA256 = h
	return e, h != old.SHA256 || old.Mode != e.Mode, true, nil
}

// write writes s's header and content, and fills e's hash.
func (p *packer) write(s source, e *Entry) error {
	for _, d := range parents(s.name) {
		if p.emitted[d] {
			continue
		}
		p.emitted[d] = true
		mode, mtime := int64(0o755), time.Now().Truncate(time.Second)
		if fi := p.dirOK[d]; s.dirs && fi != nil {
			mode, mtime = int64(fi.Mode().Perm()), fi.ModTime().Truncate(time.Second)
		}
		if err := p.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: mtime}); err != nil {
			return err
		}
	}
	hdr := &tar.Header{Name: s.name, Mode: int64(e.Mode.Perm()), ModTime: time.Now().Truncate(time.Second)}
	switch {
	case s.root == nil:
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(s.data))
		if err := p.tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := p.tw.Write(s.data)
		p.sentBytes += hdr.Size
		return err
	case s.dir:
		hdr.Typeflag, hdr.Name = tar.TypeDir, s.name+"/"
		return p.tw.WriteHeader(hdr)
	case e.Mode&fs.ModeSymlink != 0:
		target, err := s.root.Readlink(s.rel)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		e.Size, e.SHA256 = int64(len(target)), sum([]byte(target))
		return p.tw.WriteHeader(hdr)
	}
	if p.plans[packSibling(s.name)] != nil {
		// The guest writes this index itself, for the pack as it
		// rebuilds it; only the manifest needs its hash.
		h, _, err := hashFile(s.root, s.rel)
		e.SHA256 = h
		return err
	}
	f, err := s.root.OpenFile(s.rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("changed into something other than a file while being read")
	}
	hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, fi.Size(), int64(fi.Mode().Perm())
	hdr.ModTime = fi.ModTime().Truncate(time.Second)
	if pl := p.plans[s.name]; pl != nil {
		hdr.Size, hdr.Format, hdr.PAXRecords = pl.encoded, tar.FormatPAX, map[string]string{GitPackRecord: "1"}
		if err := p.tw.WriteHeader(hdr); err != nil {
			return err
		}
		sum, err := pl.write(p.tw, f)
		if err != nil {
			return err
		}
		p.sentBytes += pl.encoded
		e.Mode, e.Size, e.SHA256, e.Stat = fi.Mode().Perm(), fi.Size(), sum, statKey(fi)
		return nil
	}
	if err := p.tw.WriteHeader(hdr); err != nil {
		return err
	}
	h := sha256.New()
	var w io.Writer = io.MultiWriter(p.tw, h)
	var blob hash.Hash
	var adler hash.Hash32
	if p.blobs != nil && !isGitPath(s.name) {
		blob, adler = sha1.New(), adler32.New()
		fmt.Fprintf(blob, "blob %d\x00", fi.Size())
		w = io.MultiWriter(p.tw, h, blob, adler)
	}
	if _, err := io.CopyN(w, f, fi.Size()); err != nil {
		return fmt.Errorf("%w (did it shrink while being read?)", err)
	}
	p.sentBytes += fi.Size()
	e.Mode, e.Size, e.SHA256, e.Stat = fi.Mode().Perm(), fi.Size(), hex.EncodeToString(h.Sum(nil)), statKey(fi)
	if blob != nil {
		var name [20]byte
		blob.Sum(name[:0])
		if _, dup := p.blobs[name]; !dup {
			p.blobs[name] = &blobRef{path: s.name, size: fi.Size(), adler: adler.Sum32()}
		}
	}
	return nil
}

// planPacks plans the transfer form of every pack about to be sent (see
// GitPackRecord), once the work tree is in the stream.
func (p *packer) planPacks(srcs []source) error {
	for _, s := range srcs {
		if s.root == nil || !packName.MatchString(s.name) {
			continue
		}
		pl, err := planPack(s.root, s.rel, p.blobs)
		if err != nil {
			return fmt.Errorf("%q: %w", s.name, err)
		}
		if pl != nil {
			if p.plans == nil {
				p.plans = map[string]*packPlan{}
			}
			p.plans[s.name] = pl
			p.packs.PacksRebuilt++
			p.packs.BlobsRebuilt += pl.files
		}
	}
	return nil
}

// resendPacks adds to an incremental import the pack of every index it
// sends: a guest's index may be its own, written for a rebuilt pack, and
// a host index must never land beside it.
func resendPacks(m *Manifest, srcs []source, send []int, sendSrc []source) ([]int, []source) {
	sending := map[string]bool{}
	for _, s := range sendSrc {
		sending[s.name] = true
	}
	for _, s := range slices.Clone(sendSrc) {
		pack := packSibling(s.name)
		if pack == "" || sending[pack] {
			continue
		}
		i, ok := slices.BinarySearchFunc(m.Entries, pack, func(e Entry, p string) int { return strings.Compare(e.Path, p) })
		j := slices.IndexFunc(srcs, func(s source) bool { return s.name == pack })
		if ok && j >= 0 {
			send, sendSrc = append(send, i), append(sendSrc, srcs[j])
			sending[pack] = true
		}
	}
	return send, sendSrc
}

// writeDeletions writes the deletion entry (see DeletionsRecord).
func (p *packer) writeDeletions(paths []string) error {
	body := strings.Join(paths, "\x00")
	hdr := &tar.Header{
		Typeflag: tar.TypeReg, Name: deletionsName, Mode: 0o600, Size: int64(len(body)),
		ModTime: time.Now().Truncate(time.Second), Format: tar.FormatPAX,
		PAXRecords: map[string]string{DeletionsRecord: "1"},
	}
	if err := p.tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := io.WriteString(p.tw, body)
	return err
}

func hashFile(root *os.Root, rel string) (string, int64, error) {
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func statKey(fi fs.FileInfo) StatKey {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return StatKey{MtimeNs: fi.ModTime().UnixNano()}
	}
	return StatKey{Ino: st.Ino, Dev: st.Dev, MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}
}
