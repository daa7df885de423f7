package loader

// The tamper guard (bpf/guard.c) and the loader's own refusals that make
// it worth having: --lock and the trust recorded at load. While bpfipe
// enforces, no root process but the bpfipe executable that loaded it can
// get a descriptor of its maps, programs or links, reach its pins, trace
// its processes or change that executable; the executable in turn applies
// IPE's update rules, the trust given at load and the lock. See
// docs/security.md for the threat model and what stays out of reach.
//
// Order matters: the guard is attached before anything it protects is
// created, so no other process can take a descriptor while nothing refuses
// it. Its own configuration map exists a moment before it is attached; it
// is frozen once the load is complete and read back, so a descriptor taken
// in that moment can neither change it afterwards nor have changed it
// unnoticed.

import (
	"crypto/x509"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/loader/blockdev"
)

var (
	// ErrGuarded: the tamper guard refused this process, which is not the
	// bpfipe executable that loaded the running enforcement.
	ErrGuarded = errors.New("the tamper guard refuses this process: only the bpfipe executable that loaded enforcement, untraced, may reach it")

	// ErrLocked: enforcement was loaded with Options.Lock, which refuses
	// until reboot whatever would weaken it. It is a permission error
	// (errors.Is(err, fs.ErrPermission)).
	ErrLocked error = lockedError{}
)

type lockedError struct{}

func (lockedError) Error() string {
	return "enforcement is locked until reboot (it was loaded with --lock)"
}

func (lockedError) Is(target error) bool { return target == fs.ErrPermission }

// GuardState is what the state records of the guard of a load.
type GuardState struct {
	// Executable is the authorised executable's path at load, for
	// messages; the guard knows it by Dev and Ino.
	Executable string `json:"executable"`
	// Dev is the kernel dev_t of the executable's superblock.
	Dev uint32 `json:"dev"`
	Ino uint64 `json:"ino"`
	// Programs are the guard's programs, by name.
	Programs []string `json:"programs"`
}

// guardClaimProgram attaches first: it records the executable (the claim)
// and, from then on, keeps link IDs from the floor up out of reach.
const guardClaimProgram = "protect_bpf"

// guardProgramPrefix starts every guard program's name, so its link pins
// sort after the enforcement programs' and unload unpins the guard last.
const guardProgramPrefix = "protect_"

// guard is the loaded tamper guard of one load.
type guard struct {
	coll     *ebpf.Collection
	config   *ebpf.Map
	configID ebpf.MapID
	// want is what the configuration must hold; verified once frozen.
	want     bpf.GuardConfig
	programs []string
	progIDs  []ebpf.ProgramID
}

// markObjects names every map and program of spec so that the guard
// protects it: GuardMark, then the object's own name (the kernel keeps 15
// bytes). Data sections would have to keep their names, by which
// cilium/ebpf recognises them, so bpf/ keeps its objects free of them
// (bpf/guard_test.go checks).
func markObjects(spec *ebpf.CollectionSpec) {
	for name, m := range spec.Maps {
		if !strings.HasPrefix(name, ".") && !strings.HasPrefix(m.Name, bpf.GuardMark) {
			m.Name = bpf.GuardMark + name
		}
	}
	for name, p := range spec.Programs {
		if !strings.HasPrefix(p.Name, bpf.GuardMark) {
			p.Name = bpf.GuardMark + name
		}
	}
}

// startGuard loads and attaches the tamper guard, claims this process's
// executable as the authorised one and checks that the guard lets this
// process through. A spec without LSM programs has nothing to guard (the
// host tests' installs) and starts none.
func (l *Loader) startGuard(enforcement *ebpf.CollectionSpec) error {
	if !hasLSMPrograms(enforcement) {
		return nil
	}
	spec, err := bpf.LoadGuardSpec()
	if err != nil {
		return fmt.Errorf("load guard object: %w", err)
	}
	if spec.Programs[guardClaimProgram] == nil {
		return fmt.Errorf("load guard object: no program %s", guardClaimProgram)
	}
	markObjects(spec)
	if err := checkGuardHooks(spec, l.kernel); err != nil {
		return err
	}
	g := &guard{}
	l.guard = g
	if g.coll, err = ebpf.NewCollection(spec); err != nil {
		return loadError("load tamper guard", err)
	}
	g.config = g.coll.Maps["guard"]
	info, err := g.config.Info()
	if err != nil {
		return fmt.Errorf("read guard map info: %w", err)
	}
	var ok bool
	if g.configID, ok = info.ID(); !ok {
		return errors.New("start tamper guard: the kernel does not report map IDs")
	}
	floor, err := nextLinkFloor()
	if err != nil {
		return err
	}
	g.want = bpf.GuardConfig{ClaimTgid: uint32(os.Getpid()), LinkFloor: floor}
	if err := g.write(); err != nil {
		return err
	}

	// The claiming program first, so the claim happens before any other
	// program could refuse this process.
	names := []string{guardClaimProgram}
	for name := range g.coll.Programs {
		if name != guardClaimProgram {
			names = append(names, name)
		}
	}
	slices.Sort(names[1:])
	for i, name := range names {
		lk, err := link.AttachLSM(link.LSMOptions{Program: g.coll.Programs[name]})
		if err != nil {
			return fmt.Errorf("attach %s: %w", name, classifyAttach(err))
		}
		l.links = append(l.links, lk)
		l.linkNames = append(l.linkNames, name)
		if i == 0 {
			if err := g.claim(); err != nil {
				return err
			}
		}
	}
	g.programs = names
	for _, name := range names {
		info, err := g.coll.Programs[name].Info()
		if err != nil {
			return fmt.Errorf("read guard program info: %w", err)
		}
		if id, ok := info.ID(); ok {
			g.progIDs = append(g.progIDs, id)
		}
	}
	return g.checkAuthorised()
}

// claim reads the configuration back: the read is itself the bpf() call
// in which protect_bpf records this process's executable.
func (g *guard) claim() error {
	var got bpf.GuardConfig
	if err := g.config.Lookup(uint32(0), &got); err != nil {
		return fmt.Errorf("read guard configuration: %w", err)
	}
	if got.Claimed == 0 || got.ClaimTgid != 0 {
		return errors.New("start tamper guard: the guard did not record this process's executable")
	}
	g.want.ExeIno, g.want.ExeDev, g.want.Claimed, g.want.ClaimTgid = got.ExeIno, got.ExeDev, got.Claimed, 0
	return nil
}

// checkAuthorised opens the guard's own map by ID, which the guard refuses
// to anyone it does not authorise: a guard that refused the loader would
// lock every bpfipe command out.
func (g *guard) checkAuthorised() error {
	m, err := ebpf.NewMapFromID(g.configID)
	if err == nil {
		return m.Close()
	}
	if errors.Is(err, unix.EPERM) {
		why := "it does not recognise this process's executable"
		if tracer := tracerPID(); tracer != 0 {
			why = fmt.Sprintf("this process is traced by pid %d, and a traced bpfipe is never authorised", tracer)
		}
		return fmt.Errorf("start tamper guard: the guard refuses its own loader: %s", why)
	}
	return fmt.Errorf("start tamper guard: open guard map: %w", err)
}

func (g *guard) write() error {
	if err := g.config.Put(uint32(0), &g.want); err != nil {
		return fmt.Errorf("write guard configuration: %w", err)
	}
	return nil
}

// protectDir makes the guard refuse the pin directory dir (made, still
// empty) to everyone but the authorised executable. The directory keeps
// its inode when it is renamed into place.
func (g *guard) protectDir(dir string) error {
	if g == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("stat pin directory: %w", err)
	}
	// bpffs reports its superblock's device as st_dev, unlike btrfs.
	g.want.DirIno, g.want.DirDev = st.Ino, blockdev.KernelDev(st.Dev)
	return g.write()
}

// seal records the links of the load, ends the window in which every new
// link is protected, freezes the configuration and checks that it holds
// exactly what the loader wrote and that the loader still passes.
func (g *guard) seal(links []link.Link) error {
	if g == nil {
		return nil
	}
	if len(links) > len(g.want.Links) {
		return fmt.Errorf("seal tamper guard: %d links, the guard holds %d", len(links), len(g.want.Links))
	}
	for i, lk := range links {
		info, err := lk.Info()
		if err != nil {
			return fmt.Errorf("read link info: %w", err)
		}
		g.want.Links[i] = uint32(info.ID)
	}
	g.want.Nlinks = uint32(len(links))
	g.want.LinkFloor = 0
	if err := g.write(); err != nil {
		return err
	}
	if err := g.config.Freeze(); err != nil {
		return fmt.Errorf("freeze guard configuration: %w", err)
	}
	var got bpf.GuardConfig
	if err := g.config.Lookup(uint32(0), &got); err != nil {
		return fmt.Errorf("read guard configuration: %w", err)
	}
	if got != g.want {
		return errors.New("seal tamper guard: its configuration changed behind the loader's back; another process held its map")
	}
	return g.checkAuthorised()
}

// state describes the guard for the state map; nil without a guard.
func (g *guard) state() *GuardState {
	if g == nil {
		return nil
	}
	exe, _ := os.Executable()
	return &GuardState{Executable: exe, Dev: g.want.ExeDev, Ino: g.want.ExeIno, Programs: g.programs}
}

// programIDs are the IDs of the guard's programs.
func (g *guard) programIDs() []ebpf.ProgramID {
	if g == nil {
		return nil
	}
	return g.progIDs
}

// guardProgramIDs are the programs of the guard links pinned in dir.
func guardProgramIDs(dir string) []ebpf.ProgramID {
	entries, _ := os.ReadDir(dir)
	var ids []ebpf.ProgramID
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), linkPrefix+guardProgramPrefix) {
			continue
		}
		lk, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			continue
		}
		if info, err := lk.Info(); err == nil {
			ids = append(ids, info.Program)
		}
		lk.Close()
	}
	return ids
}

// waitProgramsGone waits until no program of ids exists any more. A link's
// ID goes before the kernel detaches its program, and the program's only
// after: so only the guard's programs going says that the guard refuses
// nothing any more, when unload returns.
func waitProgramsGone(ids []ebpf.ProgramID, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, id := range ids {
		for {
			prog, err := ebpf.NewProgramFromID(id)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err == nil {
				prog.Close()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("detach tamper guard: program %d still loaded after %v", id, limit)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// Close releases the guard's collection; its links are the loader's, and
// the pins keep it running.
func (g *guard) Close() error {
	if g == nil || g.coll == nil {
		return nil
	}
	g.coll.Close()
	g.coll = nil
	return nil
}

// nextLinkFloor is one past the highest link ID in use. The kernel hands
// out link IDs cyclically upwards, so every link attached after this call
// gets an ID at or above it (until the IDs wrap around at 2^31).
func nextLinkFloor() (uint32, error) {
	var highest uint32
	for {
		next, err := linkGetNextID(highest)
		if errors.Is(err, unix.ENOENT) {
			return highest + 1, nil
		}
		if err != nil {
			return 0, fmt.Errorf("list link IDs: %w", err)
		}
		highest = next
	}
}

// linkGetNextID is BPF_LINK_GET_NEXT_ID, which cilium/ebpf only offers
// through an iterator that opens every link.
func linkGetNextID(start uint32) (uint32, error) {
	const bpfLinkGetNextID = 31
	attr := struct{ start, next, openFlags uint32 }{start: start}
	if err := sysBPF(bpfLinkGetNextID, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		return 0, err
	}
	return attr.next, nil
}

// tracerPID is TracerPid of /proc/self/status: who traces this process.
func tracerPID() int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			var pid int
			fmt.Sscan(strings.TrimSpace(v), &pid)
			return pid
		}
	}
	return 0
}

// guardWarnings are what the load should know about the authorised
// executable: a dynamically linked bpfipe runs whatever LD_PRELOAD names
// with the guard's authorisation.
func guardWarnings() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	f, err := elf.Open(exe)
	if err != nil {
		return nil
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return []string{exe + " is dynamically linked: whoever runs it with LD_PRELOAD or LD_LIBRARY_PATH runs code the tamper guard authorises; build bpfipe with CGO_ENABLED=0"}
		}
	}
	return nil
}

// guardRefusal says that the guard refused, when a privileged process got
// EPERM from a bpf object or pin of the running enforcement: nothing else
// refuses root those.
func guardRefusal(err error) error {
	if err == nil || !errors.Is(err, unix.EPERM) || errors.Is(err, ErrGuarded) {
		return err
	}
	if missing, merr := missingCapabilities(); merr != nil || len(missing) > 0 {
		return err
	}
	return fmt.Errorf("%w (%w)", ErrGuarded, err)
}

// checkPrivileged refuses a process without the capabilities every
// command on the running enforcement needs.
func checkPrivileged() error {
	missing, err := missingCapabilities()
	if err != nil {
		return fmt.Errorf("probe privileges: %w", err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s", ErrNotPrivileged, strings.Join(missing, ", "))
	}
	return nil
}

// checkLocked refuses what Options.Lock forbids.
func (s *State) checkLocked(what string) error {
	if s != nil && s.Locked {
		return fmt.Errorf("%s: %w", what, ErrLocked)
	}
	return nil
}

// checkUpdateTrust applies the trust of the load to an update: a load given
// trusted certificates accepts only updates signed by one of them (or a
// certificate they issued), whatever the update command was given; a
// locked load without them accepts no update at all, since an update is
// as good as an unload.
func (s *State) checkUpdateTrust(f *PolicyFile) error {
	if len(s.Trusted) == 0 {
		return s.checkLocked("update policy")
	}
	certs, err := parseDERCertificates(s.Trusted)
	if err != nil {
		return fmt.Errorf("update policy: trusted certificates of the load: %w", err)
	}
	if _, err := DecodePolicy(f.Name, f.Blob, certs); err != nil {
		return fmt.Errorf("the load requires policies signed by its trusted certificates: %w", err)
	}
	return nil
}

func trustedDER(certs []*x509.Certificate) [][]byte {
	var out [][]byte
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

func parseDERCertificates(ders [][]byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, nil
}

func hasLSMPrograms(spec *ebpf.CollectionSpec) bool {
	for _, p := range spec.Programs {
		if p.Type == ebpf.LSM {
			return true
		}
	}
	return false
}

// checkGuardHooks refuses a kernel without one of the guard's hooks: the
// guard has no optional programs.
func checkGuardHooks(spec *ebpf.CollectionSpec, k *Kernel) error {
	for name, p := range spec.Programs {
		if !k.HasHook(p.AttachTo) {
			return fmt.Errorf("start tamper guard: this kernel has no LSM hook %s, which program %s needs", p.AttachTo, name)
		}
	}
	return nil
}
