# calls 4 and 5 (same warm machine), carry ["build/libs"] (libs.tar.xz: main 8a3ea47)
# call 4: per-kernel times and DRAM bytes -> ncu-main-32k.csv
mkdir -p build/gpu-builds && tar xJf build/libs/libs.tar.xz -C build/gpu-builds; timeout 200 ncu --clock-control none -k 'regex:pk_' --launch-skip 40 --launch-count 30 --metrics gpu__time_duration.sum,dram__bytes.sum,launch__grid_size,sm__warps_active.avg.pct_of_peak_sustained_active --csv build/gpu-builds/main/gpu_bench --defaults-only 32768 > $OUT/ncu-main-32k.csv 2> $OUT/ncu.err
# call 5: one layer's sections -> ncu-full-32k.csv (gzipped here)
mkdir -p build/gpu-builds && tar xJf build/libs/libs.tar.xz -C build/gpu-builds; timeout 150 ncu --clock-control none -k 'regex:pk_' --launch-skip 40 --launch-count 15 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats --page details --csv build/gpu-builds/main/gpu_bench --defaults-only 32768 > $OUT/ncu-full-32k.csv 2> $OUT/ncu.err
