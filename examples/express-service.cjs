// The example service of `npm run example`: an ordinary Express app, no metrics code in it.
// The runner (prefork-otel -w 2 examples/express-service.cjs) pre-forks the workers, supervises them and
// serves every worker's gunicorn_* metrics on one endpoint.
//   GET  /                 hello                  GET /users/:userId      a user (route template label)
//   POST /orders           201                    GET /slow               50–500 ms
//   GET  /fail             503 (failed_requests_total{error_type="RequestError"})
//   GET  /boom             a thrown error → 500 (failed_requests_total)
//   GET  /crash            the worker exits after answering; the master replaces it (restarts_total{reason="crash"})
const express = require('express');

const app = express();
app.get('/', (req, res) => res.send('hello from worker ' + process.pid + '\n'));
app.get('/users/:userId', (req, res) => res.json({ id: req.params.userId, worker: process.pid }));
app.post('/orders', (req, res) => res.status(201).json({ ok: true }));
app.get('/slow', (req, res) => setTimeout(() => res.send('slow\n'), 50 + Math.random() * 450));
app.get('/fail', (req, res) => res.status(503).send('unavailable\n'));
app.get('/boom', () => { throw new Error('boom'); });
app.get('/crash', (req, res) => res.type('text').end('bye\n', () => setImmediate(() => process.exit(1))));
// errors answer 500 quietly (Express's default handler would print every stack trace)
app.use((err, req, res, next) => res.status(500).send('internal error\n'));

module.exports = app;
