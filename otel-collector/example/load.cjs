// Steady demo traffic for docker-compose.yml: about RATE requests per second against TARGET, a mix of
// fast, slow, failing and (rarely) crashing requests, so every dashboard panel has data.
const target = process.env.TARGET || 'http://app:8000';
const rate = Number(process.env.RATE || 20);
const paths = [
  ...Array(12).fill('/'), ...Array(6).fill('/users/ID'), ...Array(3).fill('/slow'), '/fail',
];
let n = 0;
setInterval(() => {
  n++;
  const path = n % 600 === 0 ? '/crash' : paths[n % paths.length].replace('ID', String(n % 50));
  fetch(target + path).then((r) => r.arrayBuffer(), () => undefined);
}, 1000 / rate);
