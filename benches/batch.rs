//! Produce-path CPU costs per byte: CRC-32C alone, full batch validation, splitting a produce
//! payload into batches, and offset assignment. A plain memcpy of the same bytes runs in the
//! same group as the reference, so results read as a ratio to memory bandwidth.
//!
//! `cargo bench --bench batch` (criterion prints throughput in GiB/s).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spate::model::batch::{assign_offset, build_uncompressed, split_batches, validate};
use spate::model::{LeaderEpoch, Offset};

fn batch_of(size_bytes: usize) -> Vec<u8> {
    // Records of 1 KiB each, enough of them to reach about `size_bytes`.
    let count = (size_bytes / 1024).max(1) as i32;
    build_uncompressed(Offset(0), count, 1000, 1_700_000_000_000)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    for size in [1024usize, 16 * 1024, 256 * 1024, 1024 * 1024] {
        let batch = batch_of(size);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(BenchmarkId::new("memcpy_reference", size), &batch, |b, batch| {
            let mut out = vec![0u8; batch.len()];
            b.iter(|| {
                out.copy_from_slice(black_box(batch));
                black_box(&out);
            })
        });
        group.bench_with_input(BenchmarkId::new("crc32c", size), &batch, |b, batch| {
            b.iter(|| crc32c::crc32c(black_box(&batch[21..])))
        });
        group.bench_with_input(BenchmarkId::new("validate", size), &batch, |b, batch| {
            b.iter(|| validate(black_box(batch), usize::MAX).map(|h| h.records_count()))
        });
        group.bench_with_input(BenchmarkId::new("split_batches", size), &batch, |b, batch| {
            b.iter(|| split_batches(black_box(batch), usize::MAX).map(|ends| ends.len()))
        });
        group.bench_with_input(BenchmarkId::new("assign_offset", size), &batch, |b, batch| {
            let mut copy = batch.clone();
            b.iter(|| assign_offset(black_box(&mut copy), Offset(42), LeaderEpoch::INITIAL))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
