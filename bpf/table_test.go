package bpf

import (
	"cmp"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/bpfipe/bpfipe/policy"
)

// findInTable is ipe_table_find of decide.h, written again from ipe.h's
// description: the bucket's seed, then the slot it sends the key to.
func findInTable(t *testing.T, table []Row, key RowKey) (Row, bool) {
	t.Helper()
	buckets, slots := table[0].Buckets, table[0].Slots
	if buckets == 0 || slots == 0 {
		return Row{}, false
	}
	h := KeyHash(key)
	bucket := uint32(h>>32) % buckets
	raw := make([]byte, binary.Size(Row{}))
	if _, err := binary.Encode(raw, binary.NativeEndian, table[BaseRows+bucket/SeedsPerRow]); err != nil {
		t.Fatal(err)
	}
	seed := binary.NativeEndian.Uint32(raw[4*(bucket%SeedsPerRow):])
	seedRows := (buckets + SeedsPerRow - 1) / SeedsPerRow
	index := BaseRows + seedRows + uint32(mix64(h^uint64(seed)))%slots
	if int(index) >= len(table) {
		t.Fatalf("key %+v: slot index %d past the table's %d rows", key, index, len(table))
	}
	row := table[index]
	return row, row.Key == key
}

// randomRows is a BASE row per op and n digest rows of random keys, each
// row marked by its verdicts so that a lookup finding the wrong one shows.
func randomRows(rng *rand.Rand, n int) []TableRow {
	var rows []TableRow
	for op := range uint8(BaseRows) {
		var r Row
		r.Generation = 7
		r.Verdict[0] = uint32(op)
		rows = append(rows, TableRow{Key: RowKey{Kind: RowKindBase, Op: op}, Row: r})
	}
	seen := map[RowKey]bool{}
	for len(rows) < BaseRows+n {
		k := RowKey{Kind: RowKindDV + uint8(rng.IntN(3)), Op: uint8(rng.IntN(BaseRows)), Link: uint8(rng.IntN(Links))}
		if k.Kind != RowKindFV {
			k.DvFold = [2]uint32{rng.Uint32(), rng.Uint32()}
		}
		if k.Kind != RowKindDV {
			k.FvFold = [2]uint32{rng.Uint32(), rng.Uint32()}
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		var r Row
		r.Verdict[0] = uint32(len(rows))
		r.Dv.Len = rng.Uint32() // anything, to tell rows apart
		rows = append(rows, TableRow{Key: k, Row: r})
	}
	return rows
}

func TestBuildTableFindsEveryRow(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 5, 63, 64, 65, 1000, 30000} {
		rows := randomRows(rng, n)
		table, err := BuildTable(rows)
		if err != nil {
			t.Fatalf("%d digest rows: %v", n, err)
		}
		for op := range BaseRows {
			if table[op].Verdict[0] != uint32(op) || table[op].Generation != 7 {
				t.Errorf("%d digest rows: index %d holds %+v, want op %d's BASE row", n, op, table[op], op)
			}
		}
		for _, r := range rows[BaseRows:] {
			got, ok := findInTable(t, table, r.Key)
			want := r.Row
			want.Key = r.Key
			if !ok || got != want {
				t.Fatalf("%d digest rows: key %+v found %t as %+v, want %+v", n, r.Key, ok, got, want)
			}
		}
		// Keys not in the table land on a slot holding another key, or
		// none.
		for range 1000 {
			k := RowKey{Kind: RowKindDV, Op: uint8(policy.OpExecute), DvFold: [2]uint32{rng.Uint32(), rng.Uint32()}}
			if row, ok := findInTable(t, table, k); ok && !slices.ContainsFunc(rows, func(r TableRow) bool { return r.Key == k }) {
				t.Fatalf("%d digest rows: absent key %+v found as %+v", n, k, row)
			}
		}
		if n > 0 {
			slots := table[0].Slots
			if float64(slots) > 1.25*float64(n)*1.5+2 {
				t.Errorf("%d digest rows in %d slots: the table grew far past its plan", n, slots)
			}
		}
	}
}

func TestBuildTableReadsBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	rows := randomRows(rng, 500)
	table, err := BuildTable(rows)
	if err != nil {
		t.Fatal(err)
	}
	back, err := TableRows(table)
	if err != nil {
		t.Fatal(err)
	}
	byKey := func(a, b TableRow) int { return cmp.Compare(KeyHash(a.Key), KeyHash(b.Key)) }
	want := slices.Clone(rows)
	slices.SortFunc(want, byKey)
	slices.SortFunc(back, byKey)
	if !slices.Equal(back, want) {
		t.Errorf("TableRows gave %d rows back, not the %d built", len(back), len(want))
	}

	// The order rows come in does not change the table.
	shuffled := slices.Clone(rows)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	again, err := BuildTable(shuffled)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again, table) {
		t.Error("the same rows in another order make another table")
	}

	if _, err := TableRows(table[:len(table)-1]); err == nil {
		t.Error("TableRows accepted a table shorter than its geometry")
	}
}

// collidingKey is a DVFV key other than k whose KeyHash equals k's: the
// mixing is a bijection at each step, so the fs-verity fold can undo a
// different root hash fold.
func collidingKey(k RowKey) RowKey {
	w0 := uint64(k.Kind) | uint64(k.Op)<<8 | uint64(k.Link)<<16
	w1 := uint64(k.DvFold[0]) | uint64(k.DvFold[1])<<32
	w2 := uint64(k.FvFold[0]) | uint64(k.FvFold[1])<<32
	other := k
	other.DvFold[0] ^= 1
	w1b := uint64(other.DvFold[0]) | uint64(other.DvFold[1])<<32
	w2b := mix64(mix64(w0)^w1) ^ w2 ^ mix64(mix64(w0)^w1b)
	other.FvFold = [2]uint32{uint32(w2b), uint32(w2b >> 32)}
	return other
}

func TestBuildTableRefusesWhatItCannotLayOut(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	rows := randomRows(rng, 3)

	noBase := slices.Clone(rows[1:])
	if _, err := BuildTable(noBase); err == nil {
		t.Error("a table without op 0's BASE row was built")
	}
	twoBases := append(slices.Clone(rows), rows[0])
	if _, err := BuildTable(twoBases); err == nil {
		t.Error("a table with two BASE rows for op 0 was built")
	}
	sameKey := append(slices.Clone(rows), rows[BaseRows])
	if _, err := BuildTable(sameKey); err == nil {
		t.Error("a table with two rows of one key was built")
	}
	linkedBase := slices.Clone(rows)
	linkedBase[0].Key.Link = 1
	if _, err := BuildTable(linkedBase); err == nil {
		t.Error("a table with a BASE key that has a link was built")
	}

	k := RowKey{Kind: RowKindDVFV, Op: 0, DvFold: [2]uint32{11, 12}, FvFold: [2]uint32{13, 14}}
	other := collidingKey(k)
	if other == k || KeyHash(other) != KeyHash(k) {
		t.Fatalf("collidingKey: %+v and %+v, hashes %x and %x", k, other, KeyHash(k), KeyHash(other))
	}
	colliding := append(slices.Clone(rows), TableRow{Key: k}, TableRow{Key: other})
	if _, err := BuildTable(colliding); !errors.Is(err, ErrKeyHashCollision) {
		t.Errorf("two keys that hash alike: %v, want ErrKeyHashCollision", err)
	}
}

// BenchmarkBuildTable lays out 100,000 digest rows, the largest policy of
// the benchmarks.
func BenchmarkBuildTable(b *testing.B) {
	rows := randomRows(rand.New(rand.NewPCG(7, 8)), 100000)
	for b.Loop() {
		if _, err := BuildTable(rows); err != nil {
			b.Fatal(err)
		}
	}
}
