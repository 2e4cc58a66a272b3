for i in 1 2; do
 for v in <checkout of 7bbc17f> main; do
  cd /work/$v
  PYTHONPATH=/work/$v /work/main/.venv/bin/sparsify bench --model torchvision:mobilenet_v2 --input-shape 1 224 224 --density 0.1 --batch 1 8 --threads 1 --reps 7 --no-rss --backends dense ort_dense converter --out results/probes/2026-12-04-fused/abab2/${v}_$i > /work/scratch/s27/abab2_${v}_$i.log 2>&1
 done
done
echo done
