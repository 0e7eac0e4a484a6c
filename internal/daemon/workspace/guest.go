package workspace

// initPath is the guest init in every image (guestinit.InitPath; a leaf
// cannot import it without pulling the whole init in).
const initPath = "/.banger/init"

// GuestUntarArgv is the guest command that receives a Pack stream on its
// stdin into dest (the guest init's untar built-in: no tar in the image).
func GuestUntarArgv(dest string, opt PackOptions) []string {
	if opt.Zstd {
		return []string{initPath, "untar", "--zstd", dest}
	}
	return []string{initPath, "untar", dest}
}

// GuestFeaturesArgv prints, space-separated, what the guest's untar
// understands beyond plain tar (guestinit.UntarFeatures). An init older
// than the question has no such built-in and fails (127, nothing done):
// it understands nothing more.
func GuestFeaturesArgv() []string { return []string{initPath, "features"} }

// FeatureGitPack: the guest rebuilds git packs sent in transfer form
// (GitPackRecord).
const FeatureGitPack = "gitpack"

// FeatureZstd: the guest's untar reads a zstd-compressed stream
// (GuestUntarArgv with Zstd).
const FeatureZstd = "zstd"

// FeatureTarNoGit: the guest's tar built-in takes --no-git
// (GuestTreeArgv).
const FeatureTarNoGit = "tar-no-git"

// GuestTreeArgv is the guest command that writes the workspace at dest to
// its stdout as a tar, Export's tree (the guest init's tar built-in: no
// tar or git needed in the image).
//
// With opt.TarNoGit the guest leaves out every .git (Export ignores them):
// a checkout's history is most of its bytes, and its commits come in the
// bundle.
func GuestTreeArgv(dest string, opt PackOptions) []string {
	if opt.TarNoGit {
		return []string{initPath, "tar", "--no-git", dest, "."}
	}
	return []string{initPath, "tar", dest, "."}
}

// GuestHeadArgv prints the guest's HEAD commit (needs git in the guest; a
// failure means no git, or no repository: export without a bundle).
func GuestHeadArgv(dest string) []string {
	return []string{"git", "-c", "safe.directory=" + dest, "-C", dest, "rev-parse", "--verify", "HEAD^{commit}"}
}

// GuestBundleArgv writes to stdout a bundle of the guest's commits since
// base (run it only when GuestHeadArgv printed something other than base;
// git refuses to write an empty bundle).
func GuestBundleArgv(dest, base string) []string {
	return []string{"git", "-c", "safe.directory=" + dest, "-C", dest, "bundle", "create", "-", base + "..HEAD"}
}
