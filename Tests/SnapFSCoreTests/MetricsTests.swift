import Testing
@testable import SnapFSDaemon
@testable import SnapFSSnapshots

@Suite struct MetricsTests {
    @Test func addressesDefaultToLoopback() {
        #expect(MetricsAddress(parsing: "9419")?.description == "127.0.0.1:9419")
        #expect(MetricsAddress(parsing: ":9419")?.description == "127.0.0.1:9419")
        #expect(MetricsAddress(parsing: "localhost:80")?.description == "127.0.0.1:80")
        #expect(MetricsAddress(parsing: "0.0.0.0:9419")?.description == "0.0.0.0:9419")
        #expect(MetricsAddress(parsing: "[::1]:9419")?.description == "[::1]:9419")
        #expect(MetricsAddress(parsing: "9419")!.isLoopback)
        #expect(MetricsAddress(parsing: "127.0.0.2:1")!.isLoopback)
        #expect(MetricsAddress(parsing: "[::1]:1")!.isLoopback)
        #expect(!MetricsAddress(parsing: "0.0.0.0:9419")!.isLoopback)
        #expect(!MetricsAddress(parsing: "[::]:9419")!.isLoopback)
        #expect(!MetricsAddress(parsing: "10.1.2.3:9419")!.isLoopback)
    }

    @Test func badAddressesAreRefused() {
        for bad in ["", ":", "0", "65536", "-1", "abc", "host.example:80", "1.2.3.4.5:80", "::1:9419", "[::1]",
                    "[::1]9419", "[nonsense]:80", "1.2.3.4:", "１２３", "+80"] {
            #expect(MetricsAddress(parsing: bad) == nil, "\(bad)")
        }
        #expect(MountOptions(["metrics=abc"]).problems.first?.contains("metrics=abc") == true)
        #expect(MountOptions(["metrics=9419"]).metrics?.port == 9419)
    }

    @Test func statusLinesBecomeMetrics() {
        let status = [
            "backing: /srv/a \"b\"",
            "strategy: hardlink",
            "snapshots: 4",
            "newest: 20261205T080000.000Z",
            "held: 1",
            "changed: yes",
            "skipped-for-space: 2",
            "free-bytes: 1000",
            "min-free-bytes: 50",
            "snapshots-made: control=1 command=2 timer=0 sqlite=5 restore=0 unknown=0",
            "build: background",
            "building: x (1 directories done, 2 found and waiting)",
            "cache write-backs: 7 (4096 bytes)",
            "descriptors: ? of 1024",
            "requests: total=12 lookup=2 write=10",
        ]
        let newest = SnapshotName(parsing: "20261205T080000.000Z")!.timeMs
        let text = MetricsText.render(status: status, nowMs: newest + 1500, startedMs: 1_000_000)
        let samples = Set(text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map(String.init))
        for expected in [
            "snapfs_info{backing=\"/srv/a \\\"b\\\"\",strategy=\"hardlink\",build=\"background\"} 1",
            "snapfs_start_time_seconds 1000",
            "snapfs_snapshots_kept 4",
            "snapfs_snapshots_held 1",
            "snapfs_newest_snapshot_age_seconds 1.5",
            "snapfs_changed_since_newest_snapshot 1",
            "snapfs_snapshots_skipped_for_space_total 2",
            "snapfs_backing_free_bytes 1000",
            "snapfs_min_free_bytes 50",
            "snapfs_snapshots_made_total{trigger=\"sqlite\"} 5",
            "snapfs_snapshot_building 1",
            "snapfs_cache_write_backs_total 7",
            "snapfs_cache_written_back_bytes_total 4096",
            "snapfs_descriptor_limit 1024",
            "snapfs_fuse_requests_total{op=\"write\"} 10",
        ] {
            #expect(samples.contains(expected), "\(expected)")
        }
        // Unknown (`?`) and `total=` give no sample; every family has its HELP and TYPE.
        #expect(!text.contains("snapfs_open_descriptors"))
        #expect(!text.contains("op=\"total\""))
        #expect(text.contains("# TYPE snapfs_fuse_requests_total counter\n"))
        #expect(text.contains("# TYPE snapfs_snapshots_kept gauge\n"))
        // No snapshot yet: no age.
        let none = MetricsText.render(status: ["newest: -"], nowMs: 0, startedMs: 0)
        #expect(!none.contains("age_seconds"))
    }

    @Test func requestsAreAnsweredByPathAndMethod() {
        #expect(MetricsServer.head(Array("GET /metrics HTTP/1.1\r\nHost: x\r\n".utf8)) == nil)
        #expect(MetricsServer.head(Array("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8)) == "GET /metrics HTTP/1.1")
        #expect(MetricsServer.head(Array("GET /metrics HTTP/1.0\n\n".utf8)) == "GET /metrics HTTP/1.0")
        func code(_ line: Substring) -> String {
            String(decoding: MetricsServer.answer(line, { "x 1\n" }), as: UTF8.self).split(separator: " ")[1].description
        }
        #expect(code("GET /metrics HTTP/1.1") == "200")
        #expect(code("GET /metrics?x=1 HTTP/1.1") == "200")
        #expect(code("GET / HTTP/1.1") == "404")
        #expect(code("POST /metrics HTTP/1.1") == "405")
        #expect(code("garbage") == "400")
        #expect(code("GET /metrics SPDY/3") == "400")
    }

    @Test func snapshotCountsSkipSpaceShortfalls() {
        let counts = SnapshotCounts()
        counts.countMade(.timer)
        counts.countFailed(.sqlite, SnapshotFailure(.ioError, "x"))
        counts.countFailed(.sqlite, SnapshotFailure(.noSpace, "x", skippedForSpace: true))
        #expect(counts.statusLines() == [
            "snapshots-made: control=0 command=0 timer=1 sqlite=0 restore=0 unknown=0",
            "snapshots-failed: control=0 command=0 timer=0 sqlite=1 restore=0 unknown=0",
        ])
    }
}
