package main

import (
	"fmt"
	"os"
	"reflect"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader/dm"
	"github.com/bpfipe/bpfipe/test/compare/scenario"
)

// imageSet opens the dm-verity images the host built, each once per boot.
type imageSet struct {
	disks  map[string]scenario.ImageDisks
	opened map[string]scenario.Image
}

func newImageSet(m *scenario.Manifest) *imageSet {
	return &imageSet{disks: m.Images, opened: map[string]scenario.Image{}}
}

// rootHash is "ALG:HEX" of an image, for the policy's placeholders.
func (s *imageSet) rootHash(name string) (string, bool) {
	d, ok := s.disks[name]
	if !ok {
		return "", false
	}
	return d.Algorithm + ":" + d.RootHash, true
}

// open sets up img as a dm-verity device through the project's
// device-mapper code and mounts it read-only.
func (s *imageSet) open(img scenario.Image) error {
	if prev, ok := s.opened[img.Name]; ok {
		if !reflect.DeepEqual(prev, img) {
			return fmt.Errorf("image %s: two scenarios describe it differently", img.Name)
		}
		return nil
	}
	d, ok := s.disks[img.Name]
	if !ok {
		return fmt.Errorf("image %s: the host built no such image", img.Name)
	}
	params := fmt.Sprintf("1 %s %s 4096 4096 %d 1 %s %s %s", d.DataDev, d.HashDev, d.DataBlocks, d.Algorithm, d.RootHash, d.Salt)
	ctl, err := dm.Open()
	if err != nil {
		return err
	}
	defer ctl.Close()
	var dev dm.Device
	create := func() (err error) {
		dev, err = ctl.Create("compare-"+img.Name, []dm.Target{{
			Length: d.DataBlocks * 4096 / 512,
			Type:   dm.VerityTargetType,
			Params: params,
		}}, true)
		return err
	}
	if img.Signed {
		sig, err := os.ReadFile(d.Signature)
		if err != nil {
			return fmt.Errorf("image %s: read root hash signature: %w", img.Name, err)
		}
		desc := "bpfipe-compare:" + img.Name
		params += " 2 root_hash_sig_key_desc " + desc
		err = dm.WithRootHashSignature(desc, sig, create)
	} else {
		err = create()
	}
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	node := fmt.Sprintf("/dev/dm-%d", dev.Minor())
	if err := os.MkdirAll(img.Mount, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(node, img.Mount, "ext4", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("image %s: mount %s on %s: %w", img.Name, node, img.Mount, err)
	}
	s.opened[img.Name] = img
	return nil
}
