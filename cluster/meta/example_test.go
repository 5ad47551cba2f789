package meta_test

import (
	"fmt"

	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
)

// The controller group's OnApply hands each committed entry to Apply; the
// Result says what the broker has to do.
func ExampleState_Apply() {
	s := meta.New()
	index := uint64(0)
	apply := func(c meta.Command) meta.Result {
		index++
		res, err := s.Apply(index, c.Encode())
		if err != nil {
			fmt.Println("error:", err)
		}
		return res
	}
	for id := uint64(1); id <= 3; id++ {
		apply(meta.AddNode{ID: id, ClientAddr: fmt.Sprintf("n%d:7400", id), ClusterAddr: fmt.Sprintf("n%d:7401", id)})
	}
	fmt.Printf("%s\n", meta.CreateTopic{Name: "orders", Partitions: 3}.Encode())
	res := apply(meta.CreateTopic{Name: "orders", Partitions: 3})
	for _, p := range res.Partitions {
		fmt.Printf("partition %d: group %d, replicas %v\n", p.Partition, p.Group, p.Replicas)
	}
	apply(meta.CreateTopic{Name: "orders", Partitions: 1})
	fmt.Println("version", s.Version(), "leaders", s.LeaderCounts())
	// Output:
	// {"v":1,"op":"create_topic","name":"orders","partitions":3}
	// partition 0: group 1000, replicas [2 3 1]
	// partition 1: group 1001, replicas [3 2 1]
	// partition 2: group 1002, replicas [1 2 3]
	// error: meta: topic already exists: "orders"
	// version 5 leaders map[1:1 2:1 3:1]
}
