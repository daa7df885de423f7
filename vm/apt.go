package vm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// debianKeyring is the keyring that signs Debian's archive; the private
// configuration names it so apt verifies the Debian 13 lists like any other.
const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// privateListsMaxAge bounds how stale the private package lists may get
// before a run refreshes them, so "newest" tracks the archive without an
// update on every run.
const privateListsMaxAge = 24 * time.Hour

// retryOfflineAfter is how long a failed network step (updating lists,
// downloading a package) is not retried, so an offline machine does not pay
// for it on every run.
const retryOfflineAfter = time.Hour

// apt runs apt-get and apt-cache, either against the system's sources or
// against a private configuration whose lists live in the cache and never
// touch the system's.
type apt struct {
	// opts are the -o options of a private configuration; nil for the system.
	opts []string
	// listsDir is the private lists directory; empty for the system.
	listsDir string
	suite    string
}

func systemApt() *apt { return &apt{suite: "system"} }

// privateApt sets up a private configuration for one suite of the Debian
// mirror the system already uses.
func privateApt(cacheDir, suite string) (*apt, error) {
	dir := filepath.Join(cacheDir, "apt", suite)
	lists := filepath.Join(dir, "lists")
	for _, d := range []string{filepath.Join(lists, "partial"), filepath.Join(dir, "cache", "archives", "partial")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create apt directory: %w", err)
		}
	}
	mirror := findDebianMirror("/etc/apt")
	line := fmt.Sprintf("deb [signed-by=%s] %s %s main\n", debianKeyring, mirror, suite)
	sourceList := filepath.Join(dir, "sources.list")
	if old, err := os.ReadFile(sourceList); err != nil || string(old) != line {
		if err := os.WriteFile(sourceList, []byte(line), 0o644); err != nil {
			return nil, fmt.Errorf("write private source list: %w", err)
		}
	}
	return &apt{
		suite:    suite,
		listsDir: lists,
		opts: []string{
			"-o", "Dir::Etc::SourceList=" + sourceList,
			"-o", "Dir::Etc::SourceParts=/dev/null",
			"-o", "Dir::Etc::Preferences=/dev/null",
			"-o", "Dir::Etc::PreferencesParts=/dev/null",
			"-o", "Dir::State::Lists=" + lists,
			"-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
			// Only the package lists are needed, not translations or
			// AppStream metadata.
			"-o", "Acquire::Languages=none",
			"-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
			"-o", "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
		},
	}, nil
}

func (a *apt) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, tool, append(append([]string{}, a.opts...), args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	return cmd
}

func (a *apt) run(ctx context.Context, dir, tool string, args ...string) (string, error) {
	cmd := a.command(ctx, tool, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, lastLines(msg, 5))
	}
	return stdout.String(), nil
}

// update refreshes the package lists.
func (a *apt) update(ctx context.Context) error {
	_, err := a.run(ctx, "", "apt-get", "-q", "update")
	return err
}

// listsAge reports how old the private lists are, and whether there are any.
func (a *apt) listsAge() (time.Duration, bool) {
	matches, _ := filepath.Glob(filepath.Join(a.listsDir, "*_Packages*"))
	if len(matches) == 0 {
		return 0, false
	}
	var newest time.Time
	for _, m := range matches {
		if info, err := os.Stat(m); err == nil && info.ModTime().After(newest) {
			newest = info.ModTime()
		}
	}
	return time.Since(newest), true
}

// systemListsDir is where apt keeps the system's package lists.
const systemListsDir = "/var/lib/apt/lists"

// listsStamp identifies the current package lists by the names, sizes and
// modification times of the Packages files; empty if there are none.
func (a *apt) listsStamp() string {
	dir := a.listsDir
	if dir == "" {
		dir = systemListsDir
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*_Packages*"))
	if len(matches) == 0 {
		return ""
	}
	sort.Strings(matches)
	h := sha256.New()
	for _, m := range matches {
		info, err := os.Stat(m)
		if err != nil {
			return ""
		}
		fmt.Fprintf(h, "%s %d %d\n", m, info.Size(), info.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))
}

// refreshPrivate updates stale or missing private lists. Failing to refresh
// lists that exist is not an error: the run goes on with what it has, which
// is what lets a machine work offline.
func (a *apt) refreshPrivate(ctx context.Context, p progress) error {
	if a.listsDir == "" {
		return nil
	}
	age, ok := a.listsAge()
	if ok && age < privateListsMaxAge {
		return nil
	}
	// Offline, every attempt costs seconds of DNS time-outs: after one,
	// make do with the lists there are for a while.
	attempt := filepath.Join(filepath.Dir(a.listsDir), "last-update-attempt")
	if info, err := os.Stat(attempt); ok && err == nil && time.Since(info.ModTime()) < retryOfflineAfter {
		return nil
	}
	if f, err := os.Create(attempt); err == nil {
		f.Close()
	}
	done := p.step("updating the Debian %s package lists", a.suite)
	err := a.update(ctx)
	done(err)
	if err != nil && !ok {
		return err
	}
	if err != nil {
		p.note("using package lists from %s ago: %v", age.Round(time.Hour), err)
	}
	return nil
}

// candidate is a package apt can download, at its candidate version.
type candidate struct {
	pkg     string
	version string
	rank    int // the number the package name carries (ABI or patch level)
}

// newest returns the downloadable packages whose names match pattern,
// newest first by the number in pattern's first group. Names apt only knows
// from dependencies, with no candidate version, are left out.
func (a *apt) newest(ctx context.Context, prefix string, pattern *regexp.Regexp) ([]candidate, error) {
	out, err := a.run(ctx, "", "apt-cache", "pkgnames", prefix)
	if err != nil {
		return nil, err
	}
	var names []string
	ranks := map[string]int{}
	for _, name := range strings.Fields(out) {
		m := pattern.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		rank, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		names = append(names, name)
		ranks[name] = rank
	}
	if len(names) == 0 {
		return nil, nil
	}
	out, err = a.run(ctx, "", "apt-cache", append([]string{"policy"}, names...)...)
	if err != nil {
		return nil, err
	}
	var found []candidate
	for pkg, version := range parsePolicy(out) {
		if _, ok := ranks[pkg]; ok && version != "" && version != "(none)" {
			found = append(found, candidate{pkg: pkg, version: version, rank: ranks[pkg]})
		}
	}
	sort.Slice(found, func(i, j int) bool {
		if found[i].rank != found[j].rank {
			return found[i].rank > found[j].rank
		}
		return found[i].pkg > found[j].pkg
	})
	return found, nil
}

// parsePolicy reads each package's candidate version from apt-cache policy.
func parsePolicy(out string) map[string]string {
	candidates := map[string]string{}
	current := ""
	scanner := bufio.NewScanner(strings.NewReader(out))
	for scanner.Scan() {
		line := scanner.Text()
		if line != "" && !strings.HasPrefix(line, " ") && strings.HasSuffix(line, ":") {
			current = strings.TrimSuffix(line, ":")
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate:"); ok && current != "" {
			candidates[current] = strings.TrimSpace(v)
		}
	}
	return candidates
}

// download fetches one package version into dir and returns the .deb's path.
// apt-get download checks the file against the signed lists.
func (a *apt) download(ctx context.Context, dir, pkg, version string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// The _apt sandbox user cannot write into root's cache; downloading as
	// root is what apt would fall back to anyway, without the warning.
	if _, err := a.run(ctx, dir, "apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", pkg+"="+version); err != nil {
		return "", err
	}
	matches, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(matches) != 1 {
		return "", fmt.Errorf("download %s: expected one .deb in %s, found %d", pkg, dir, len(matches))
	}
	return matches[0], nil
}

// extractDeb unpacks a package's files (not its scripts) into dir.
func extractDeb(ctx context.Context, deb, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("extract %s: %w: %s", filepath.Base(deb), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// findDebianMirror returns the Debian mirror the system's apt sources use,
// so the private configuration fetches from the same place (a local mirror
// or proxy keeps working). It falls back to deb.debian.org.
func findDebianMirror(etcApt string) string {
	var files []string
	files = append(files, filepath.Join(etcApt, "sources.list"))
	more, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*"))
	files = append(files, more...)
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		var uri string
		if strings.HasSuffix(file, ".sources") {
			uri = mirrorFromDeb822(string(data))
		} else if strings.HasSuffix(file, ".list") {
			uri = mirrorFromOneLine(string(data))
		}
		if uri != "" {
			return strings.TrimSuffix(uri, "/")
		}
	}
	return "http://deb.debian.org/debian"
}

// isDebianArchive tells a Debian main-archive entry from security,
// backports or third-party ones: its suite is a bare release name and it is
// signed by the Debian keyring or lives under a path ending in /debian.
func isDebianArchive(uri, suite, signedBy string) bool {
	if strings.Contains(suite, "-") || strings.Contains(suite, "/") || suite == "" {
		return false
	}
	if strings.Contains(signedBy, "debian-archive-keyring") {
		return true
	}
	return strings.HasSuffix(strings.TrimSuffix(uri, "/"), "/debian")
}

func mirrorFromOneLine(data string) string {
	scanner := bufio.NewScanner(strings.NewReader(data))
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if i := strings.Index(line, "#"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[0] != "deb" {
			continue
		}
		rest := fields[1:]
		signedBy := ""
		if strings.HasPrefix(rest[0], "[") {
			var opts []string
			for len(rest) > 0 {
				opts = append(opts, rest[0])
				done := strings.HasSuffix(rest[0], "]")
				rest = rest[1:]
				if done {
					break
				}
			}
			for _, o := range opts {
				if v, ok := strings.CutPrefix(strings.Trim(o, "[]"), "signed-by="); ok {
					signedBy = v
				}
			}
		}
		if len(rest) >= 2 && isDebianArchive(rest[0], rest[1], signedBy) {
			return rest[0]
		}
	}
	return ""
}

func mirrorFromDeb822(data string) string {
	for _, stanza := range strings.Split(data, "\n\n") {
		fields := map[string]string{}
		scanner := bufio.NewScanner(strings.NewReader(stanza))
		key := ""
		for scanner.Scan() {
			line := scanner.Text()
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
				if key != "" {
					fields[key] += " " + strings.TrimSpace(line)
				}
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			key = strings.ToLower(strings.TrimSpace(k))
			fields[key] = strings.TrimSpace(v)
		}
		if !strings.Contains(" "+fields["types"]+" ", " deb ") || strings.EqualFold(fields["enabled"], "no") {
			continue
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			for _, suite := range strings.Fields(fields["suites"]) {
				if isDebianArchive(uri, suite, fields["signed-by"]) {
					return uri
				}
			}
		}
	}
	return ""
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
