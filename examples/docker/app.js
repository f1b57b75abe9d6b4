// The service baked into both images: an Express app exported for the runner. Run by itself under the
// preload (Dockerfile.preload) it listens on $PORT.
const express = require('express');

const app = express();
app.get('/', (req, res) => res.send('hello\n'));
app.get('/items/:id', (req, res) => res.json({ id: req.params.id }));

module.exports = app;
if (require.main === module) {
  const port = Number(process.env.PORT || 8000);
  app.listen(port, '0.0.0.0', () => console.log(`listening on 0.0.0.0:${port}`));
}
