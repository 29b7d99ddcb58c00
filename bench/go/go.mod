// The Go peers of qilin's benchmarks. Standard library only: the module has
// no dependencies, so bench/go/build.sh builds it offline.
module qilin/bench/go

go 1.19
