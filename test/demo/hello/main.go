// Command hello is the program on the demo's dm-verity image (test/demo).
// It says where it runs from, so the transcript shows which copy the
// policy let through.
package main

import (
	"fmt"
	"os"
)

func main() {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	fmt.Printf("hello from %s\n", self)
}
