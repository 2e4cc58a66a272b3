/* Microbenchmark of sparse-tile inner-loop shapes on data resident in L1 (32 KiB X). */
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define NC 128   /* columns in L1: NC * 64 floats = 32 KiB */
#define NNZ 4096
float X[NC*64] __attribute__((aligned(64)));
int32_t idx[NNZ]; int32_t off[NNZ]; float val[NNZ];
float out[64] __attribute__((aligned(64)));

__attribute__((noinline)) void A(int reps){ /* current: idx, shl, broadcast, 4 mem FMAs, 2 groups */
  for(int r=0;r<reps;r++){
    __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0,b0=a0,b1=a0,b2=a0,b3=a0;
    for(int j=0;j<NNZ;j+=2){
      const float*p=X+(int64_t)idx[j]*64; __m512 v=_mm512_set1_ps(val[j]);
      a0=_mm512_fmadd_ps(v,_mm512_load_ps(p),a0);a1=_mm512_fmadd_ps(v,_mm512_load_ps(p+16),a1);
      a2=_mm512_fmadd_ps(v,_mm512_load_ps(p+32),a2);a3=_mm512_fmadd_ps(v,_mm512_load_ps(p+48),a3);
      const float*q=X+(int64_t)idx[j+1]*64; __m512 w=_mm512_set1_ps(val[j+1]);
      b0=_mm512_fmadd_ps(w,_mm512_load_ps(q),b0);b1=_mm512_fmadd_ps(w,_mm512_load_ps(q+16),b1);
      b2=_mm512_fmadd_ps(w,_mm512_load_ps(q+32),b2);b3=_mm512_fmadd_ps(w,_mm512_load_ps(q+48),b3);
    }
    _mm512_store_ps(out,_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(b0,b1),_mm512_add_ps(b2,b3))));
  }
}
__attribute__((noinline)) void B(int reps){ /* byte offsets precomputed: no shift */
  for(int r=0;r<reps;r++){
    __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0,b0=a0,b1=a0,b2=a0,b3=a0;
    const char*xb=(const char*)X;
    for(int j=0;j<NNZ;j+=2){
      const float*p=(const float*)(xb+off[j]); __m512 v=_mm512_set1_ps(val[j]);
      a0=_mm512_fmadd_ps(v,_mm512_load_ps(p),a0);a1=_mm512_fmadd_ps(v,_mm512_load_ps(p+16),a1);
      a2=_mm512_fmadd_ps(v,_mm512_load_ps(p+32),a2);a3=_mm512_fmadd_ps(v,_mm512_load_ps(p+48),a3);
      const float*q=(const float*)(xb+off[j+1]); __m512 w=_mm512_set1_ps(val[j+1]);
      b0=_mm512_fmadd_ps(w,_mm512_load_ps(q),b0);b1=_mm512_fmadd_ps(w,_mm512_load_ps(q+16),b1);
      b2=_mm512_fmadd_ps(w,_mm512_load_ps(q+32),b2);b3=_mm512_fmadd_ps(w,_mm512_load_ps(q+48),b3);
    }
    _mm512_store_ps(out,_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(b0,b1),_mm512_add_ps(b2,b3))));
  }
}
__attribute__((noinline)) void C(int reps){ /* sequential X, no index at all */
  for(int r=0;r<reps;r++){
    __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0,b0=a0,b1=a0,b2=a0,b3=a0;
    for(int j=0;j<NNZ;j+=2){
      const float*p=X+(j%NC)*64; __m512 v=_mm512_set1_ps(val[j]);
      a0=_mm512_fmadd_ps(v,_mm512_load_ps(p),a0);a1=_mm512_fmadd_ps(v,_mm512_load_ps(p+16),a1);
      a2=_mm512_fmadd_ps(v,_mm512_load_ps(p+32),a2);a3=_mm512_fmadd_ps(v,_mm512_load_ps(p+48),a3);
      const float*q=p+64; __m512 w=_mm512_set1_ps(val[j+1]);
      b0=_mm512_fmadd_ps(w,_mm512_load_ps(q),b0);b1=_mm512_fmadd_ps(w,_mm512_load_ps(q+16),b1);
      b2=_mm512_fmadd_ps(w,_mm512_load_ps(q+32),b2);b3=_mm512_fmadd_ps(w,_mm512_load_ps(q+48),b3);
    }
    _mm512_store_ps(out,_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(b0,b1),_mm512_add_ps(b2,b3))));
  }
}
__attribute__((noinline)) void D(int reps){ /* 256-bit vectors (ymm), 8 per nonzero = same 64 floats */
  for(int r=0;r<reps;r++){
    __m256 a[8],b[8]; for(int k=0;k<8;k++){a[k]=_mm256_setzero_ps();b[k]=a[k];}
    for(int j=0;j<NNZ;j+=2){
      const float*p=X+(int64_t)idx[j]*64; __m256 v=_mm256_set1_ps(val[j]);
      for(int k=0;k<8;k++) a[k]=_mm256_fmadd_ps(v,_mm256_load_ps(p+8*k),a[k]);
      const float*q=X+(int64_t)idx[j+1]*64; __m256 w=_mm256_set1_ps(val[j+1]);
      for(int k=0;k<8;k++) b[k]=_mm256_fmadd_ps(w,_mm256_load_ps(q+8*k),b[k]);
    }
    __m256 s=_mm256_setzero_ps(); for(int k=0;k<8;k++) s=_mm256_add_ps(s,_mm256_add_ps(a[k],b[k]));
    _mm256_store_ps(out,s);
  }
}
__attribute__((noinline)) void E(int reps){ /* register-only: X row reused (no loads): FMA bound */
  for(int r=0;r<reps;r++){
    __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0,b0=a0,b1=a0,b2=a0,b3=a0;
    __m512 x0=_mm512_load_ps(X),x1=_mm512_load_ps(X+16),x2=_mm512_load_ps(X+32),x3=_mm512_load_ps(X+48);
    for(int j=0;j<NNZ;j+=2){
      __m512 v=_mm512_set1_ps(val[j]);
      a0=_mm512_fmadd_ps(v,x0,a0);a1=_mm512_fmadd_ps(v,x1,a1);a2=_mm512_fmadd_ps(v,x2,a2);a3=_mm512_fmadd_ps(v,x3,a3);
      __m512 w=_mm512_set1_ps(val[j+1]);
      b0=_mm512_fmadd_ps(w,x0,b0);b1=_mm512_fmadd_ps(w,x1,b1);b2=_mm512_fmadd_ps(w,x2,b2);b3=_mm512_fmadd_ps(w,x3,b3);
    }
    _mm512_store_ps(out,_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(b0,b1),_mm512_add_ps(b2,b3))));
  }
}
int main(void){
  srand(1); for(int i=0;i<NC*64;i++) X[i]=(float)rand()/RAND_MAX;
  for(int j=0;j<NNZ;j++){idx[j]=rand()%NC; off[j]=idx[j]*256; val[j]=(float)rand()/RAND_MAX*1e-3f;}
  void(*fs[])(int)={A,B,C,D,E}; const char*nm[]={"A idx+shl (shipped shape)","B byte offsets","C no index","D ymm x8","E no X loads (FMA bound)"};
  int reps=2000;
  for(int f=0;f<5;f++){ fs[f](100); double best=1e9; for(int t=0;t<7;t++){double s=now(); fs[f](reps); double e=now()-s; if(e<best)best=e;}
    double flops=2.0*64*NNZ*reps; printf("%-28s %6.1f GFLOP/s  %.2f cycles/nonzero at 3.64 GHz\n",nm[f],flops/best/1e9, best*3.64e9/((double)NNZ*reps)); }
  return 0;
}
