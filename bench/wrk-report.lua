-- wrk: print the summary as one JSON line (latencies in microseconds)
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('@@wrk {"requests":%d,"durationUs":%d,"errors":%d,"non2xx":%d,"meanUs":%.1f,"p50Us":%d,"p90Us":%d,"p99Us":%d,"maxUs":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
